import re

import pytest

from contrastkit.config import Config, load_yaml, parse_overrides, resolve, save_yaml, update
from contrastkit.errors import ConfigError


def test_unknown_key_suggests_the_close_match():
    with pytest.raises(ConfigError, match="unknown config key 'temprature'; did you mean 'temperature'"):
        update(Config(), {"temprature": 0.2})


def test_overrides_are_parsed_as_yaml_and_type_checked():
    values = parse_overrides(["lr=0.1", "compile=true", "epochs=3", "preset_options={min_scale: 0.5}"])
    config = update(Config(), values)
    assert (config.lr, config.compile, config.epochs) == (0.1, True, 3)
    assert config.preset_options == {"min_scale": 0.5}
    assert update(Config(), {"temperature": 1}).temperature == 1.0  # int -> float is lossless
    with pytest.raises(ConfigError, match="epochs must be"):
        update(Config(), {"epochs": "many"})
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["lr"])


def test_resolve_fills_the_recipe_and_scales_the_learning_rate():
    config = resolve(Config(dataset="cifar10", batch_size=256))
    assert config.backbone == "resnet18" and config.cifar_stem is True and config.epochs == 200
    assert config.lr == pytest.approx(0.12)
    assert resolve(Config(dataset="mnist", epochs=1)).epochs == 1  # the user's value wins


@pytest.mark.parametrize("values, message", [
    ({"optimizer": "adam"}, "optimizer must be one of"),
    ({"temperature": -0.1}, "temperature must be > 0"),
    ({"epochs": 0}, "epochs must be >= 1"),
    ({"warmup_epochs": 100.0, "epochs": 2}, "warmup_epochs"),
])
def test_bad_values_are_refused(values, message):
    with pytest.raises(ConfigError, match=message):
        resolve(update(Config(), values))


def test_yaml_round_trip_and_errors(tmp_path):
    config = resolve(Config(dataset="digits"))
    save_yaml(config, tmp_path / "config.yaml")
    assert update(Config(), load_yaml(tmp_path / "config.yaml")) == config
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(tmp_path / "list.yaml")


def test_dotted_keys_set_one_option_of_a_dict_key():
    config = update(Config(), parse_overrides(["method_options.queue_size=8192", "method_options.ema_momentum=0.999"]))
    assert config.method_options == {"queue_size": 8192, "ema_momentum": 0.999}
    with pytest.raises(ConfigError, match="only the dict keys"):
        update(Config(), {"lr.x": 1})


def test_method_recipes_follow_the_image_scale_and_keep_every_option():
    small = resolve(Config(method="byol", dataset="cifar10"))
    assert (small.optimizer, small.hidden_dim, small.projection_dim) == ("sgd", 4096, 256)
    assert small.lr == pytest.approx(0.12 * 512 / 256)
    assert small.method_options == {"predictor_hidden_dim": 4096, "ema_momentum": 0.99, "ema_momentum_final": 1.0}
    large = resolve(Config(method="byol", dataset="cifar10", image_size=224))
    assert large.optimizer == "lars" and large.method_options["ema_momentum"] == 0.996
    swav = resolve(Config(method="swav", dataset="cifar10", method_options={"num_prototypes": 100}))
    assert swav.method_options["num_prototypes"] == 100 and swav.method_options["num_local_crops"] == 0


def test_the_dataset_recipe_can_tune_one_method():
    assert resolve(Config(dataset="mnist")).temperature == 0.2  # the quick start's SimCLR
    assert resolve(Config(dataset="mnist", method="moco_v2")).temperature == 0.1  # MoCo's own recipe
    assert resolve(Config(dataset="mnist", method="byol")).temperature is None  # BYOL has none


def test_unknown_method_option_suggests_the_close_match():
    with pytest.raises(ConfigError, match="unknown method option 'queue_sise' for MoCoV2; did you mean 'queue_size'"):
        resolve(Config(method="moco_v2", method_options={"queue_sise": 10}))


def test_numbers_yaml_1_1_reads_as_strings_are_numbers():
    assert update(Config(), parse_overrides(["lr=1e-3", "weight_decay=5E-4"])).lr == 0.001
    assert update(Config(), {"temperature": "2e-1"}).temperature == 0.2
    with pytest.raises(ConfigError, match="lr must be"):
        update(Config(), {"lr": "fast"})


@pytest.mark.parametrize("values, message", [
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"temperature": float("inf")}, "temperature must be a finite number"),
    ({"momentum": 1.5}, "momentum must lie in \\[0, 1\\)"),
    ({"weight_decay": -1.0}, "weight_decay must be >= 0"),
    ({"seed": -1}, "seed must lie in \\[0, 2\\*\\*32\\)"),
    ({"hidden_dim": 0}, "hidden_dim must be >= 1"),
    ({"device": "gpu"}, "device must be auto, cpu, cuda or cuda:N"),
])
def test_values_that_would_fail_deep_in_torch_are_refused_up_front(values, message):
    with pytest.raises(ConfigError, match=message):
        resolve(update(Config(), values))


def test_a_cuda_index_is_a_valid_device_and_the_recipe_stem_follows_the_backbone():
    assert resolve(update(Config(), {"device": "cuda:1"})).device == "cuda:1"
    assert resolve(Config(dataset="cifar10", backbone="small_cnn")).cifar_stem is False
    assert resolve(Config(dataset="cifar10")).cifar_stem is True


def test_dict_keys_must_name_options():
    with pytest.raises(ConfigError, match="method_options takes option names as keys"):
        update(Config(), {"method_options": {1: 2}})


def test_the_config_offers_exactly_the_poolings_the_encoders_take():
    # config.py imports no torch, so it lists the choices again: they must not drift apart.
    from contrastkit.config import CHOICES
    from contrastkit.modalities import SeriesModality
    from contrastkit.models.series import SERIES_POOLINGS
    from contrastkit.models.text import POOLINGS

    assert SeriesModality.option_choices["pooling"] == SERIES_POOLINGS
    assert CHOICES["pooling"] == POOLINGS


@pytest.mark.parametrize("values, message", [
    ({"epochs": "many"}, "epochs must be an integer or empty (null), got 'many' (text)."),
    ({"lr": [0.1]}, "lr must be a number or empty (null), got [0.1] (a list)."),
    ({"compile": "sometimes"}, "compile must be true or false, got 'sometimes' (text)."),
    ({"seed": True}, "seed must be an integer, got True (a true/false value)."),
    ({"data_root": 3}, "data_root must be text or empty (null), got 3 (an integer)."),
    ({"method_options": 5}, "method_options must be a mapping of option names to values, e.g. "
                            "{queue_size: 8192}, got 5 (an integer)."),
    ({"preset_options": None}, "preset_options cannot be empty; give it a mapping of option names to values, "
                               "e.g. {min_scale: 0.5}."),
    ({"momentum": None}, "momentum cannot be empty; give it a number."),
], ids=["integer", "number", "true-or-false", "not-a-bool", "text", "mapping", "empty-mapping", "empty-number"])
def test_type_errors_name_the_types_in_words_not_python(values, message):
    # Before: "epochs must be int | None, got 'many' (str)", "method_options must be
    # dict[str, typing.Any]": Python's annotations, for someone editing a YAML file.
    with pytest.raises(ConfigError) as refused:
        update(Config(), values)
    assert str(refused.value) == message


@pytest.mark.parametrize("method, dataset, article", [("simcse", "cifar10", "an image"), ("byol", "stsb", "a text"),
                                                      ("ts2vec", "digits", "an image")])
def test_a_method_for_another_modality_names_it_with_the_right_article(method, dataset, article):
    # Before: "choose a image method".
    with pytest.raises(ConfigError, match=rf"; choose {article} method \(contrastkit list\)"):
        resolve(Config(method=method, dataset=dataset))


def test_every_field_names_its_type_in_words():
    # A field of a type the messages have no words for would fail with a KeyError instead.
    from contrastkit.config import FIELDS

    for key in set(FIELDS) - {"modality_options"}:  # set under each modality's name, tested below
        expected = rf"^{key} must be .*, got <object .*> \(another kind of value\)\.$"
        with pytest.raises(ConfigError, match=expected) as refused:
            update(Config(), {key: object()})
        assert not re.search(r"typing|\||\b(int|float|bool|str|dict|NoneType)\b", str(refused.value))


def _image_tree(folder, side):
    from PIL import Image

    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for index in range(6):
            Image.new("RGB", (side, side), (index * 40, 90 if label == "a" else 200, 160)).save(
                folder / label / f"{index}.png")
    return folder


def _jpeg_archive(path, side):
    import io

    import numpy as np
    from PIL import Image

    parts = {}
    for split in ("train", "test"):
        blobs = []
        for index in range(4):
            buffer = io.BytesIO()
            Image.new("RGB", (side, side), (index * 50, 100, 200)).save(buffer, format="JPEG")
            blobs.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
        parts[f"{split}_jpeg"] = np.concatenate(blobs)
        parts[f"{split}_offsets"] = np.cumsum([0] + [len(blob) for blob in blobs]).astype(np.int64)
        parts[f"{split}_labels"] = np.arange(4, dtype=np.int64) % 2
    np.savez(path, classes=np.array(["a", "b"]), **parts)
    return path


@pytest.mark.parametrize("layout", ["tree", "npz", "shards"])
def test_the_recipe_follows_the_images_as_stored_whether_or_not_their_size_is_stated(tmp_path, layout):
    from contrastkit.data import pack_shards

    def data(side):
        if layout == "npz":
            return _jpeg_archive(tmp_path / f"images{side}.npz", side)
        tree = _image_tree(tmp_path / f"tree{side}", side)
        if layout == "tree":
            return tree
        pack_shards(tree, tmp_path / f"shards{side}")
        return tmp_path / f"shards{side}"

    recipe_keys = ("optimizer", "temperature", "lr", "weight_decay", "head", "cifar_stem", "backbone")
    for side, expected in ((32, dict(optimizer="sgd", temperature=0.5, cifar_stem=True)),
                           (96, dict(optimizer="lars", temperature=0.1, cifar_stem=False))):
        path = str(data(side))
        unstated, stated = resolve(Config(dataset=path)), resolve(Config(dataset=path, image_size=side))
        assert {key: getattr(unstated, key) for key in recipe_keys} == \
            {key: getattr(stated, key) for key in recipe_keys}, side
        assert {key: getattr(unstated, key) for key in expected} == expected, side


def test_config_yaml_records_the_preset_and_stem_a_run_used(tmp_path, run_cli):
    tree = _image_tree(tmp_path / "tree", 16)
    run_dir = tmp_path / "run"
    assert run_cli("train", "--dataset", str(tree), "--epochs", "1", "--batch-size", "4", "--out", str(run_dir),
                   "progress=false", "evaluate=false", "plot=false") == 0
    saved = load_yaml(run_dir / "config.yaml")
    assert saved["preset"] == "simclr_cifar" and saved["cifar_stem"] is True and saved["backbone"] == "resnet18"
    assert None not in (saved["head"], saved["optimizer"], saved["temperature"], saved["lr"])


def test_a_modality_option_is_a_section_of_its_name_and_the_old_flat_key_still_works(capsys):
    given = update(Config(dataset="GunPoint", method="ts2vec"), {"series.pooling": "pyramid"})
    assert given.modality_options == {"series": {"pooling": "pyramid"}}
    assert update(Config(), {"series": {"pooling": "pyramid"}}).modality_options == given.modality_options
    renamed = update(Config(dataset="GunPoint", method="ts2vec"), {"series_pooling": "pyramid"})
    assert renamed.modality_options == given.modality_options
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "series_pooling is now series.pooling" in err
    with pytest.raises(ConfigError, match="series takes the series options as a mapping"):
        update(Config(), {"series": "pyramid"})


def test_a_config_yaml_of_the_previous_release_still_loads_without_a_notice(tmp_path, capsys):
    # Such a file names every option of every modality, at its default, and no modality.
    path = tmp_path / "config.yaml"
    path.write_text("method: simclr\ndataset: digits\nseries_pooling: max\ncaption_templates: null\n")
    config = resolve(update(Config(), load_yaml(path)))
    assert config.modality == "image" and config.modality_options == {}
    assert capsys.readouterr().err == ""
    save_yaml(config, path)
    assert "modality: image\n" in path.read_text() and update(Config(), load_yaml(path)) == config


def test_the_modality_is_recorded_with_its_options(tmp_path):
    config = resolve(Config(method="clip", dataset="digits"))
    assert config.modality == "image_text" and config.modality_options == {"image_text": {"caption_templates": None}}
    save_yaml(config, tmp_path / "config.yaml")
    assert "modality: image_text\nimage_text:\n  caption_templates: null\n" in (tmp_path / "config.yaml").read_text()
    with pytest.raises(ConfigError, match="unknown option image_text.templates; did you mean "
                                          "image_text.caption_templates?"):
        resolve(update(Config(method="clip", dataset="digits"), {"image_text.templates": "t.txt"}))


def test_a_misspelt_modality_section_is_suggested_and_the_internal_field_is_not_a_key():
    with pytest.raises(ConfigError, match="unknown config key 'seires'; did you mean 'series'"):
        update(Config(), {"seires.pooling": "pyramid"})
    with pytest.raises(ConfigError, match="set under its name: series.pooling=pyramid"):
        update(Config(), {"modality_options": {"series": {"pooling": "pyramid"}}})
