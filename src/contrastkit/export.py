"""Take a trained encoder out of its run folder, in the formats people deploy.

``export(run_dir, format)`` writes the run's encoder (``Run.method.backbone``: the representation that
``contrastkit embed`` saves and the probes score) as one of:

* ``safetensors``: its weights, with the config that rebuilds it in the file's metadata (backbone,
  input channels, ResNet stem; for images the normalisation and size of the evaluation view; for
  text the base model, pooling and max_length; for series the pooling).
  :func:`load_encoder` rebuilds it without the run folder and embeds as ``contrastkit embed`` does.
* ``onnx``: the encoder with the preprocessing that is part of inference, checked under onnxruntime
  against torch. Images: input ``images``, float32 (N, C, H, W) in [0, 1] at the run's image size,
  normalised inside the graph. Text: inputs ``input_ids`` and ``attention_mask``, int64 (N, T) from
  the base model's tokenizer (truncated to max_length), pooled inside the graph (mean, cls or max over
  the real tokens, as the run was trained; not L2-normalised, as ``contrastkit embed``). Series: input
  ``series``, float32 (N, C, T), z-normalised, NaN past a series' end. The batch axis (and T) are
  dynamic; the config is in the model's ``metadata_props`` under ``contrastkit``.
* ``sentence-transformers`` (text runs): a folder that ``SentenceTransformer(path)`` loads: the
  transformer, its tokenizer, the run's pooling and max_length, no Normalize module (the run's
  embeddings are not normalised).
* ``torchvision`` (runs of the torchvision ResNets): the ResNet's state dict without a classifier, for
  ``torchvision.models.resnetN()`` with ``fc = nn.Identity()`` (and the run's stem, see
  :func:`torchvision_recipe`).

Every output is written whole or not at all (a temporary beside it, then renamed); an existing one is
refused unless ``overwrite``.

Example::

    from contrastkit import load_encoder
    from contrastkit.export import export

    path = export("runs/simclr-digits", "safetensors")  # runs/simclr-digits/export/encoder.safetensors
    encoder = load_encoder(path)                         # no run folder needed
    features = encoder(uint8_images)                     # (N, D), as `contrastkit embed` saves them
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from contrastkit._atomic import write_atomic, write_folder_atomic
from contrastkit.augment.image import Normalize, to_float
from contrastkit.errors import ContrastkitError
from contrastkit.models import create_backbone
from contrastkit.models.series import pooled
from contrastkit.models.text import pool

if TYPE_CHECKING:
    from contrastkit.runs import Run

FORMATS = ("safetensors", "onnx", "sentence-transformers", "torchvision")
# What an export is called when --out is not given (in RUN_DIR/export/) or is a folder.
DEFAULT_NAMES = {"safetensors": "encoder.safetensors", "onnx": "encoder.onnx",
                 "sentence-transformers": "sentence-transformers", "torchvision": "torchvision.pth"}
SUFFIXES = {"safetensors": (".safetensors",), "onnx": (".onnx",), "torchvision": (".pth", ".pt")}
# The optional packages each format needs and the extra that installs them.
NEEDS = {"onnx": (("onnx", "onnxscript", "onnxruntime"), "onnx")}
# Where an exported ONNX model may stray from torch on the check batch (float32 kernels differ).
ONNX_TOLERANCE = 1e-4
# The key of the config in the safetensors metadata and the ONNX metadata_props.
METADATA_KEY = "contrastkit"
# Bumped when the config's meaning changes, so that load_encoder can refuse what it cannot read.
CONFIG_VERSION = 1
# Samples of the run's data that the ONNX model is checked on (the graph is traced on two of them).
CHECK_SAMPLES = 8
# The torchvision models that contrastkit's resnetN backbones wrap.
TORCHVISION_BACKBONES = ("resnet18", "resnet34", "resnet50")


class ImageEncoder(nn.Module):
    """An image backbone behind the normalisation of the run's evaluation view: images in, the
    features ``contrastkit embed`` saves out.

    Args:
        backbone: the run's image backbone.
        mean: per-channel mean subtracted from images in [0, 1].
        std: per-channel standard deviation they are divided by.
        image_size: (H, W) the run's images have (kept for the user; the backbones pool globally).

    Example:
        >>> from contrastkit.models import SmallCNN
        >>> encoder = ImageEncoder(SmallCNN(in_channels=1), mean=[0.3], std=[0.38], image_size=(8, 8)).eval()
        >>> encoder(torch.zeros(2, 1, 8, 8, dtype=torch.uint8)).shape
        torch.Size([2, 128])
    """

    def __init__(self, backbone: nn.Module, mean: list[float], std: list[float], image_size: tuple[int, int]) -> None:
        super().__init__()
        self.backbone = backbone
        # Not persistent: the state dict stays the backbone's own, the values live in the config.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32)[None, :, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32)[None, :, None, None], persistent=False)
        self.image_size = tuple(image_size)
        self.feature_dim = backbone.feature_dim

    def forward(self, images: Tensor) -> Tensor:
        """uint8 images in [0, 255] or float images in [0, 1], (N, C, H, W) -> (N, feature_dim)."""
        # The eval view's own steps, in its order, so that the features equal `contrastkit embed`'s.
        images = to_float(images)
        return self.backbone((images - self.mean) / self.std)


class _TextGraph(nn.Module):
    """A text encoder as a function of token tensors (what an ONNX graph takes): the transformer, then
    the run's pooling over the real tokens."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        # Without token_type_ids, which are all zeros for single sentences: the model's default.
        hidden = self.encoder.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return pool(hidden, attention_mask, self.encoder.pooling)


def export(run_dir: str | Path, format: str, out: str | Path | None = None, *, overwrite: bool = False) -> Path:
    """Write the encoder of the run in ``run_dir`` as ``format``; returns the path written.

    The format, the output and the optional packages are checked before the run is loaded; the run
    folder is locked while its checkpoint is read (as ``contrastkit embed`` does).

    Args:
        run_dir: the folder of a ``contrastkit train`` run.
        format: ``safetensors``, ``onnx``, ``sentence-transformers`` (text runs) or ``torchvision``
            (runs of resnet18/34/50).
        out: the file to write (a folder for sentence-transformers); an existing folder receives
            the format's default name. Default: ``RUN_DIR/export/<default name>``.
        overwrite: replace an existing output (a sentence-transformers folder only if it is one).

    Raises:
        ContrastkitError: an unknown format, one that does not fit the run, an existing output
            without ``overwrite``, a missing optional package, an ONNX model that disagrees with torch.
    """
    # Imported here: the application layer pulls in the trainer and the evaluation, which
    # `import contrastkit` (for load_encoder) should not.
    from contrastkit import config as config_module
    from contrastkit import run_folder
    from contrastkit.runs import Run, check_run_folder

    if format not in FORMATS:
        close = difflib.get_close_matches(str(format), FORMATS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ContrastkitError(f"unknown export format {format!r}{hint}; choose from {', '.join(FORMATS)}.")
    run_dir = check_run_folder(run_dir)
    config = config_module.update(config_module.Config(), config_module.load_yaml(run_dir / "config.yaml"))
    kind = _kind(config)
    fitting = _formats_for(kind, config.backbone)
    if format not in fitting:
        why = (f"{config.backbone} is not one of torchvision's ResNets ({', '.join(TORCHVISION_BACKBONES)})"
               if format == "torchvision" and kind == "image" else
               f"{format} exports {'text' if format == 'sentence-transformers' else 'image'} runs only")
        raise ContrastkitError(f"{run_dir} is {'an' if kind == 'image' else 'a'} {kind} run of {config.backbone} and "
                               f"{why}; export it as {' or '.join(fitting)}.")
    path = _output_path(run_dir, format, out)
    _check_output(path, format, overwrite)
    packages, extra = NEEDS.get(format, ((), None))
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        raise ContrastkitError(f"exporting to {format} needs {' and '.join(missing)}, not installed: "
                               f"pip install 'contrastkit[{extra}]'")
    with run_folder.locked(run_dir, action="export"):
        run = Run.load(run_dir)
    # Exported and checked on the CPU, in eval mode (no dropout, BatchNorm's running statistics).
    run.method.backbone.cpu().eval()
    writers = {"safetensors": _write_safetensors, "onnx": _write_onnx,
               "sentence-transformers": _write_sentence_transformers, "torchvision": _write_torchvision}
    writers[format](run, kind, path)
    return path


def load_encoder(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild an encoder from its ``contrastkit export --format safetensors`` file, in eval mode.

    What it takes and gives, as ``contrastkit embed``: an image encoder (:class:`ImageEncoder`) takes
    uint8 or [0, 1] float images (N, C, H, W) at the run's size (``encoder.image_size``) and
    normalises them itself; a text encoder (:class:`contrastkit.models.text.TextEncoder`) takes
    ``encoder.tokenize(sentences)``, its tokenizer and architecture read from the base model the
    config names (a hub id, or the offline package of all-MiniLM-L6-v2); a series encoder takes
    z-normalised float series (N, C, T). Each returns (N, feature_dim) float features.

    Args:
        path: the ``.safetensors`` file.
        device: where to put the encoder.

    Raises:
        ContrastkitError: a file that is not a contrastkit export.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)

    if not path.is_file():
        raise ContrastkitError(f"{path} is not a file; give the .safetensors file of "
                               "`contrastkit export RUN_DIR --format safetensors`.")
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ContrastkitError(f"{path} is not a readable safetensors file ({error}); give the file of "
                               "`contrastkit export RUN_DIR --format safetensors`.") from None
    if METADATA_KEY not in metadata:
        raise ContrastkitError(f"{path} holds no contrastkit config in its metadata, so the encoder cannot be "
                               "rebuilt; give a file written by `contrastkit export RUN_DIR --format safetensors`.")
    config = json.loads(metadata[METADATA_KEY])
    if config.get("version", 0) > CONFIG_VERSION:
        raise ContrastkitError(f"{path} was written by a newer contrastkit (export config version "
                               f"{config['version']}); upgrade contrastkit to load it.")
    encoder = build_encoder(config)
    target = encoder.backbone if isinstance(encoder, ImageEncoder) else encoder
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), str(error))
        raise ContrastkitError(f"the weights in {path} do not fit the encoder its config describes ({first}).") \
            from None
    return encoder.to(device).eval()


def build_encoder(config: dict[str, Any]) -> nn.Module:
    """The untrained encoder an export config (:func:`encoder_config`) describes."""
    kind = config["modality"]
    if kind == "image":
        backbone = create_backbone(config["backbone"], in_channels=config["in_channels"],
                                   cifar_stem=config["cifar_stem"])
        return ImageEncoder(backbone, config["mean"], config["std"], tuple(config["image_size"]))
    if kind == "series":
        return pooled(create_backbone(config["backbone"], in_channels=config["in_channels"]), config["pooling"])
    return create_backbone(config["backbone"], pooling=config["pooling"], max_length=config["max_length"])


def encoder_config(run: "Run", kind: str) -> dict[str, Any]:
    """What rebuilds and feeds the run's encoder (JSON-ready), with where it came from.

    Args:
        run: a loaded run (:meth:`contrastkit.runs.Run.load`).
        kind: ``image``, ``text`` or ``series`` (:func:`_kind` of its config).
    """
    from contrastkit import __version__

    config = run.config
    described: dict[str, Any] = {"version": CONFIG_VERSION, "modality": kind, "backbone": config.backbone,
                                 "feature_dim": int(run.method.backbone.feature_dim)}
    if kind == "image":
        images = _split(run).images
        channels, height, width = (int(side) for side in images[:1].shape[1:])
        mean, std = _normalisation(run, channels)
        described.update(in_channels=channels, cifar_stem=bool(config.cifar_stem), image_size=[height, width],
                         mean=mean, std=std)
    elif kind == "series":
        pooling = run.modality.options(config.modality_options.get(run.modality.name))["pooling"]
        described.update(in_channels=int(run.splits.channels), pooling=pooling)
    else:
        described.update(pooling=config.pooling, max_length=config.max_length)
    described["trained"] = {"method": config.method, "dataset": config.dataset, "epochs": config.epochs,
                            "modality": run.modality.name, "contrastkit": __version__}
    return described


def torchvision_recipe(name: str, in_channels: int, cifar_stem: bool) -> str:
    """The Python lines that build the torchvision model a ``torchvision`` export loads into
    (:func:`torchvision_model` builds it here).

    Example:
        >>> print(torchvision_recipe("resnet18", 3, cifar_stem=True))
        model = torchvision.models.resnet18()
        model.fc = torch.nn.Identity()
        model.conv1 = torch.nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = torch.nn.Identity()
    """
    lines = [f"model = torchvision.models.{name}()", "model.fc = torch.nn.Identity()"]
    if cifar_stem:
        lines += [f"model.conv1 = torch.nn.Conv2d({in_channels}, 64, 3, stride=1, padding=1, bias=False)",
                  "model.maxpool = torch.nn.Identity()"]
    elif in_channels != 3:
        lines.append(f"model.conv1 = torch.nn.Conv2d({in_channels}, 64, 7, stride=2, padding=3, bias=False)")
    return "\n".join(lines)


def torchvision_model(name: str, in_channels: int, cifar_stem: bool) -> nn.Module:
    """The model :func:`torchvision_recipe` writes out: torchvision's ``name`` without a classifier
    (the encoder's output is its pooled features), with the stem the run had."""
    import torchvision

    model = getattr(torchvision.models, name)()
    model.fc = nn.Identity()
    if cifar_stem:
        model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    return model


# --- checks before the run is loaded ---------------------------------------------------------------


def _kind(config: Any) -> str:
    """``image`` (image and image-text runs: the image backbone), ``text`` or ``series``."""
    from contrastkit.modalities import (MODALITIES, ImageModality, SeriesModality, TextModality,
                                        resolve_modality)

    # As Run does: a config saved before the modality was recorded is recognised from its dataset.
    modality = MODALITIES.get(config.modality) if config.modality else resolve_modality(config.dataset, config.method)
    for kind, unit in (("image", ImageModality), ("text", TextModality), ("series", SeriesModality)):
        if isinstance(modality, unit):
            return kind
    raise ContrastkitError(f"export takes image, image-text, text and series runs, not {modality.with_article} run.")


def _formats_for(kind: str, backbone: str) -> list[str]:
    formats = ["safetensors", "onnx"]
    if kind == "text":
        formats.append("sentence-transformers")
    if kind == "image" and backbone in TORCHVISION_BACKBONES:
        formats.append("torchvision")
    return formats


def _output_path(run_dir: Path, format: str, out: str | Path | None) -> Path:
    if out is None:
        return run_dir / "export" / DEFAULT_NAMES[format]
    out = Path(out)
    if format == "sentence-transformers":
        return out
    if out.is_dir():
        return out / DEFAULT_NAMES[format]
    if out.suffix not in SUFFIXES[format]:
        # Named as what is written, so that the message and the file agree.
        out = out.with_name(out.name + SUFFIXES[format][0])
    return out


def _check_output(path: Path, format: str, overwrite: bool) -> None:
    if not path.exists():
        return
    if not overwrite:
        raise ContrastkitError(f"{path} already exists; add --overwrite to replace it, or choose another --out.")
    if format == "sentence-transformers":
        # --overwrite replaces a whole folder: only one that an export (or sentence-transformers) wrote.
        if not path.is_dir():
            raise ContrastkitError(f"{path} is a file; give --out a folder for the sentence-transformers model.")
        if any(path.iterdir()) and not (path / "modules.json").is_file():
            raise ContrastkitError(f"{path} is not a sentence-transformers folder (no modules.json), so --overwrite "
                                   "will not delete it; choose another --out.")
    elif path.is_dir():
        raise ContrastkitError(f"{path} is a folder; give --out the file to write.")


# --- what the writers share ------------------------------------------------------------------------


def _split(run: "Run") -> Any:
    """The test split, else the train split (a corpus without a test split)."""
    return run.splits.test if run.splits.test is not None else run.splits.train


def _normalisation(run: "Run", channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the run's evaluation view, which must be a Normalize alone (as
    every preset's is): anything else would be preprocessing that the export does not carry."""
    from contrastkit.augment import MultiView

    views = next(module for module in run.augment.modules() if isinstance(module, MultiView))
    steps = list(views.eval_transform.transforms)
    if len(steps) != 1 or not isinstance(steps[0], Normalize):
        raise ContrastkitError(f"the run's evaluation view is {[type(step).__name__ for step in steps]}, not a "
                               "Normalize alone; export carries only the normalisation.")
    # The shortest decimals that give the same float32 values back: exact, and readable in the JSON.
    mean, std = ([float(np.format_float_positional(value, unique=True)) for value in statistic.numpy()]
                 for statistic in (steps[0].mean, steps[0].std))
    # A single statistic applies to every channel (Normalize broadcasts it).
    return (mean * channels, std * channels) if len(mean) == 1 else (mean, std)


def _state(module: nn.Module) -> dict[str, Tensor]:
    """``module``'s state dict as contiguous CPU tensors, none sharing memory (safetensors refuses
    shared tensors, which tied weights are)."""
    state, seen = {}, set()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        state[name] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    return state


def _feature_line(config: dict[str, Any]) -> str:
    return f"{config['backbone']}, {config['feature_dim']}-d features"


# --- the writers -----------------------------------------------------------------------------------


def _write_safetensors(run: "Run", kind: str, path: Path) -> None:
    from safetensors.torch import save

    config = encoder_config(run, kind)
    data = save(_state(run.method.backbone), metadata={METADATA_KEY: json.dumps(config)})
    write_atomic(path, lambda file: file.write(data))
    print(f"wrote {path} ({_feature_line(config)}); rebuild it with contrastkit.load_encoder({str(path)!r})")


class _Graph(NamedTuple):
    """What is exported to ONNX: the module, its inputs' names, which of their axes are dynamic
    (the same for every input), and ``sample(count)``: the inputs of the run's first ``count`` samples."""

    module: nn.Module
    names: list[str]
    axes: dict[int, Any]
    sample: Callable[[int], tuple[Tensor, ...]]


def _onnx_graph(run: "Run", kind: str, config: dict[str, Any]) -> _Graph:
    data = _split(run)
    backbone = run.method.backbone
    batch = torch.export.Dim("batch")
    if kind == "image":
        # H and W stay those of the run's images, which the encoder was trained and checked at.
        return _Graph(ImageEncoder(backbone, config["mean"], config["std"], tuple(config["image_size"])), ["images"],
                      {0: batch}, lambda count: (to_float(data.images[:count].cpu()),))
    if kind == "series":
        return _Graph(backbone, ["series"], {0: batch, 2: torch.export.Dim("length")},
                      lambda count: (data.values[:count].cpu().float(),))

    def tokens(count: int) -> tuple[Tensor, Tensor]:
        # Tokenized on their own, so that the traced and the checked batches differ in length too.
        tokenized = backbone.tokenize(data.texts[:count])
        return tokenized["input_ids"], tokenized["attention_mask"]

    return _Graph(_TextGraph(backbone), ["input_ids", "attention_mask"],
                  {0: batch, 1: torch.export.Dim("sequence")}, tokens)


def _write_onnx(run: "Run", kind: str, path: Path) -> None:
    import onnxruntime

    config = encoder_config(run, kind)
    graph, names, axes, sample = _onnx_graph(run, kind, config)
    graph.eval()
    traced, inputs = sample(2), sample(CHECK_SAMPLES)
    if traced[0].shape[0] < 2:
        # torch.export specialises a dimension of size 0 or 1 to a constant: trace two samples.
        traced = tuple(torch.cat([tensor, tensor]) for tensor in traced)
    # The torch.export-based exporter (dynamo=True), not the TorchScript one: the TorchScript tracer is
    # deprecated and records the Python branches taken on the example's values (transformers' mask
    # code warns so), while torch.export keeps the batch and sequence axes symbolic and says where it
    # cannot. Traced on two samples, checked on up to CHECK_SAMPLES: another batch size.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on naming dynamic axes and on deprecations
            program = torch.onnx.export(graph, traced, dynamo=True, verbose=False,
                                        input_names=names, output_names=["features"],
                                        dynamic_shapes=tuple(axes for _ in names))
    except Exception as error:  # the exporter's errors are of many types, and long
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ContrastkitError(f"torch.onnx could not export {config['backbone']} ({type(error).__name__}: "
                               f"{first}); export it as safetensors instead.") from None
    model = program.model_proto
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {name: tensor.numpy() for name, tensor in zip(names, inputs)})
    with torch.inference_mode():
        expected = graph(*inputs).numpy()
    difference = float(np.abs(got - expected).max())
    if not difference <= ONNX_TOLERANCE:
        raise ContrastkitError(f"the ONNX model of {config['backbone']} differs from torch by {difference:.3g} "
                               f"(more than {ONNX_TOLERANCE:g}) under onnxruntime; nothing was written. Export it "
                               "as safetensors instead.")
    config["onnx"] = {"inputs": _onnx_inputs(kind, config), "output": "features: float32 (N, feature_dim)",
                      "checked": f"onnxruntime within {difference:.2g} of torch on {len(got)} samples"}
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps(config))
    model.doc_string = f"contrastkit encoder ({_feature_line(config)}). Inputs: {config['onnx']['inputs']}"
    data = model.SerializeToString()
    write_atomic(path, lambda file: file.write(data))
    print(f"wrote {path} ({_feature_line(config)}; onnxruntime agrees with torch within {difference:.2g} on "
          f"{len(got)} samples)")


def _onnx_inputs(kind: str, config: dict[str, Any]) -> str:
    """The ONNX graph's inputs in words, for its metadata."""
    if kind == "image":
        height, width = config["image_size"]
        return (f"images: float32 (N, {config['in_channels']}, {height}, {width}) in [0, 1] (uint8 / 255), "
                f"normalised inside the graph with mean {config['mean']} and std {config['std']}")
    if kind == "series":
        return (f"series: float32 (N, {config['in_channels']}, T), each series and channel z-normalised, NaN "
                "past a series' end")
    return (f"input_ids, attention_mask: int64 (N, T) from the tokenizer of {config['backbone'][len('hf:'):]}, "
            f"truncated to {config['max_length']} tokens; {config['pooling']} pooling over the real tokens inside "
            "the graph, not L2-normalised")


def _write_sentence_transformers(run: "Run", kind: str, path: Path) -> None:
    import transformers

    from contrastkit import __version__

    encoder = run.method.backbone
    config = encoder_config(run, kind)
    # The legacy names and pooling flags that every sentence-transformers release reads (v6 maps them
    # to its own classes), so that the folder loads with older releases too.
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    pooling = {"word_embedding_dimension": config["feature_dim"],
               "pooling_mode_cls_token": config["pooling"] == "cls",
               "pooling_mode_mean_tokens": config["pooling"] == "mean",
               "pooling_mode_max_tokens": config["pooling"] == "max",
               "pooling_mode_mean_sqrt_len_tokens": False}
    # No Normalize module: `contrastkit embed` does not normalise; encode(normalize_embeddings=True) does.
    settings = {"__version__": {"contrastkit": __version__, "transformers": transformers.__version__,
                                "pytorch": torch.__version__},
                "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"}

    def fill(folder: Path) -> None:
        encoder.model.save_pretrained(folder)
        encoder.tokenizer.save_pretrained(folder)
        (folder / "1_Pooling").mkdir()
        for name, content in (("modules.json", modules), ("1_Pooling/config.json", pooling),
                              ("sentence_bert_config.json", {"max_seq_length": config["max_length"],
                                                             "do_lower_case": False}),
                              ("config_sentence_transformers.json", settings), ("contrastkit.json", config)):
            (folder / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")

    write_folder_atomic(path, fill)
    print(f"wrote {path} ({_feature_line(config)}, {config['pooling']} pooling, max_length {config['max_length']}); "
          f"load it with sentence_transformers.SentenceTransformer({str(path)!r})")


def _write_torchvision(run: "Run", kind: str, path: Path) -> None:
    config = encoder_config(run, kind)
    # contrastkit's resnetN holds torchvision's model as `net`, its classifier replaced by Identity.
    state = {name[len("net."):]: tensor for name, tensor in _state(run.method.backbone).items()}
    shape = (config["backbone"], config["in_channels"], config["cifar_stem"])
    # What the user is told to load it into takes it strictly, or nothing is written.
    torchvision_model(*shape).load_state_dict(state, strict=True)
    write_atomic(path, lambda file: torch.save(state, file))
    print(f"wrote {path} ({_feature_line(config)}); load it with strict=True into:\n{torchvision_recipe(*shape)}")
