"""Run a frozen encoder over a dataset (a tensor of images, a list of sentences) and collect its features."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from contrastkit.errors import ConfigError, InputError


def _default_device(encoder: nn.Module) -> torch.device:
    param = next(encoder.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def extract_features(
    encoder: nn.Module,
    images: Tensor,
    transform: Callable[[Tensor], Tensor] | None = None,
    *,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
    channels_last: bool = False,
    autocast: bool = True,
) -> Tensor:
    """Encode ``images`` (N, C, H, W) batch by batch and return float32 features (N, D) on the CPU;
    float time series (N, C, T), vectors (N, F) or any other (N, ...) samples go through the same way.

    Each batch is moved to ``device`` (default: the encoder's device), passed through
    ``transform`` (e.g. a preset's eval view turning uint8 into normalised floats), then
    through the encoder in eval mode under ``torch.inference_mode``. Without a transform,
    uint8 images are scaled to float in [0, 1]. Outputs with more than two dimensions
    (feature maps) are flattened. On CUDA the forward runs under bf16 autocast unless
    ``autocast=False``. ``channels_last`` converts each image batch to that memory format;
    set it when the encoder's weights are channels_last too. The encoder's train/eval
    flags (per submodule) are restored afterwards, even on error.

    Example:
        >>> encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16))
        >>> images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
        >>> extract_features(encoder, images, batch_size=4).shape
        torch.Size([10, 16])
    """
    if images.ndim < 2:
        raise InputError(f"images must hold N samples along the first dimension ((N, C, H, W) images, (N, C, T) "
                         f"series, (N, F) vectors), got shape {tuple(images.shape)}.")
    if images.shape[0] == 0:
        raise InputError("images is empty (N=0); pass at least one image.")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
    device = torch.device(device) if device is not None else _default_device(encoder)
    use_autocast = autocast and device.type == "cuda"

    # Remember every submodule's flag: encoder.train(was_training) would clobber
    # deliberately frozen parts (e.g. BatchNorm kept in eval during training).
    modes = [(module, module.training) for module in encoder.modules()]
    encoder.eval()
    n = images.shape[0]
    out: Tensor | None = None
    try:
        for start in range(0, n, batch_size):
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_autocast):
                batch = images[start : start + batch_size].to(device, non_blocking=True)
                if transform is not None:
                    batch = transform(batch)
                elif not batch.is_floating_point():
                    batch = batch.float().div_(255.0)
                if channels_last and batch.ndim == 4:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                feats = encoder(batch)
                if not isinstance(feats, Tensor):
                    raise InputError(
                        f"the encoder returned {type(feats).__name__}, expected a Tensor; "
                        "wrap it so that forward returns the feature tensor only."
                    )
                feats = feats.flatten(1).float().cpu()
            # Filled outside inference mode so the result is an ordinary tensor that
            # later code (e.g. a linear probe) may use with autograd.
            if out is None:
                out = torch.empty((n, feats.shape[1]), dtype=torch.float32)
            out[start : start + feats.shape[0]] = feats
    finally:
        for module, mode in modes:
            module.training = mode
    assert out is not None
    return out


def extract_text_features(encoder: nn.Module, texts: Sequence[str], *, batch_size: int = 256,
                          device: str | torch.device | None = None, autocast: bool = True) -> Tensor:
    """Encode ``texts`` with a text encoder (``tokenize`` and ``forward``, as
    :class:`contrastkit.models.text.TextEncoder`) and return float32 features (N, D) on the CPU,
    in the order of ``texts``.

    Sentences are encoded in order of length, so that a batch pads to similar lengths (much less
    padding to compute on a CPU), in eval mode under ``torch.inference_mode`` (bf16 autocast on
    CUDA unless ``autocast=False``); the encoder's train/eval flags are restored afterwards.
    """
    if isinstance(texts, str) or not len(texts):
        raise InputError("texts must be a non-empty list of sentences.")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
    device = torch.device(device) if device is not None else _default_device(encoder)
    use_autocast = autocast and device.type == "cuda"
    order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
    modes = [(module, module.training) for module in encoder.modules()]
    encoder.eval()
    out: Tensor | None = None
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_autocast):
                tokens = {key: value.to(device) for key, value in encoder.tokenize([texts[i] for i in chunk]).items()}
                feats = encoder(tokens).float().cpu()
            if out is None:
                out = torch.empty((len(texts), feats.shape[1]), dtype=torch.float32)
            out[torch.tensor(chunk)] = feats
    finally:
        for module, mode in modes:
            module.training = mode
    assert out is not None
    return out
