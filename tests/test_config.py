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
    from contrastkit.models.series import SERIES_POOLINGS
    from contrastkit.models.text import POOLINGS

    assert CHOICES["series_pooling"] == SERIES_POOLINGS
    assert CHOICES["pooling"] == POOLINGS
