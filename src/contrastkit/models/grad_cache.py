"""GradCache (Gao et al., 2021): a contrastive step on a batch too large to encode at once.

An in-batch-negative loss couples every sample with every other, so the batch cannot simply be
split into accumulated micro-batches: the loss of a micro-batch is not a part of the loss of the
batch. GradCache splits the ENCODER's work instead. With the embeddings E = [E_1, ..., E_K] of K
chunks of the batch, and L a function of E alone, the chain rule gives

    dL/dtheta = sum_k  (dE_k/dtheta)^T  g_k,        g_k = dL/dE_k  (the "cached" gradient)

so a step is (1) encode every chunk without a graph; (2) compute L on the concatenated embeddings,
made leaves, and back-propagate it to them, caching g = dL/dE; (3) encode every chunk again WITH a
graph and back-propagate g_k through it, which accumulates that chunk's term of the sum into the
parameters' ``.grad``. The parameter gradients are those of the plain step (encode the whole batch,
compute L, backward), up to floating-point summation order, provided every chunk's second forward
computes what its first did: the random state (dropout) is saved before and restored around each
chunk's two passes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from contrastkit._checks import check_count
from contrastkit.errors import ConfigError, InputError

Tower = Tensor | Mapping[str, Tensor]
"""The inputs of one side of the pairs: a tensor with N rows, or a dict of them (tokenized text)."""

_RNGState = tuple[Tensor, dict[int, Tensor]]


def _check_tower(index: int, tower: Tower) -> int:
    """The number of rows of ``towers[index]``, after checking every tensor of it has that many."""
    name = f"towers[{index}]"
    if isinstance(tower, Tensor):
        tensors = {name: tower}
    elif isinstance(tower, Mapping) and tower:
        tensors = {f"{name}[{key!r}]": value for key, value in tower.items()}
    else:
        got = "an empty dict" if isinstance(tower, Mapping) else type(tower).__name__
        raise InputError(f"{name} must be a Tensor or a non-empty dict of Tensors (e.g. input_ids and "
                         f"attention_mask), got {got}.")
    rows = None
    for tensor_name, tensor in tensors.items():
        if not isinstance(tensor, Tensor) or tensor.ndim == 0:
            raise InputError(f"{tensor_name} must be a Tensor with one row per sample, got "
                             f"{type(tensor).__name__}{' (0-dim)' if isinstance(tensor, Tensor) else ''}.")
        if rows is None:
            rows = tensor.shape[0]
        elif tensor.shape[0] != rows:
            raise InputError(f"the tensors of {name} disagree on the number of rows ({rows} and "
                             f"{tensor.shape[0]} in {tensor_name}); give each one row per sample.")
    if rows == 0:
        raise InputError(f"{name} has no rows; check what feeds the step (a filter or an empty last batch).")
    return rows


def _chunks(tower: Tower, rows: int, chunk_size: int) -> list[tuple[Tower, int]]:
    """Consecutive slices of ``chunk_size`` rows (views, no copies) and their row counts; the last
    may be shorter."""
    slices = [slice(start, min(start + chunk_size, rows)) for start in range(0, rows, chunk_size)]
    if isinstance(tower, Tensor):
        return [(tower[part], part.stop - part.start) for part in slices]
    return [({key: value[part] for key, value in tower.items()}, part.stop - part.start) for part in slices]


def _cuda_devices(towers: Sequence[Tower]) -> list[int]:
    """The CUDA devices whose generators dropout may draw from: the current one (where the model
    usually lives) and those of the inputs. None where CUDA is not initialised, as
    torch.utils.checkpoint does: querying it would initialise it."""
    if not torch.cuda.is_initialized():
        return []
    devices = {torch.cuda.current_device()}
    for tower in towers:
        for tensor in ([tower] if isinstance(tower, Tensor) else tower.values()):
            if tensor.is_cuda:
                devices.add(tensor.device.index)
    return sorted(devices)


def _get_rng_state(cuda_devices: list[int]) -> _RNGState:
    return torch.get_rng_state(), {device: torch.cuda.get_rng_state(device) for device in cuda_devices}


def _set_rng_state(state: _RNGState) -> None:
    cpu_state, cuda_states = state
    torch.set_rng_state(cpu_state)
    for device, cuda_state in cuda_states.items():
        torch.cuda.set_rng_state(cuda_state, device)


def _checked_embedding(output: Any, tower: int, rows: int) -> Tensor:
    if not isinstance(output, Tensor):
        raise InputError(f"encode must return a Tensor of embeddings, got {type(output).__name__} for a chunk of "
                         f"towers[{tower}]; wrap the model so that it returns the pooled embeddings.")
    if output.ndim == 0 or output.shape[0] != rows or not output.is_floating_point():
        raise InputError(f"encode must return floating-point embeddings with one row per input row; for a "
                         f"chunk of {rows} rows of towers[{tower}] it returned {output.dtype} of shape "
                         f"{tuple(output.shape)}.")
    return output


def _encode_without_graph(encoder: Callable[[Any], Tensor], chunks: list[tuple[Tower, int]], tower: int,
                          cuda_devices: list[int]) -> tuple[Tensor, list[_RNGState]]:
    """Step (1) for one tower: its embeddings, made a leaf that requires grad, and the random state
    each chunk's forward started from."""
    states, parts = [], []
    with torch.no_grad():
        for chunk, rows in chunks:
            states.append(_get_rng_state(cuda_devices))
            parts.append(_checked_embedding(encoder(chunk), tower, rows))
    return torch.cat(parts).requires_grad_(), states


def _backward_through_encoder(encoder: Callable[[Any], Tensor], chunks: list[tuple[Tower, int]], tower: int,
                              states: list[_RNGState], cached: Tensor) -> None:
    """Step (3) for one tower: encode each chunk again from its saved random state, with a graph,
    and back-propagate its slice of the cached gradient ``cached`` through it."""
    for (chunk, _), state, chunk_grad in zip(chunks, states, cached.split([rows for _, rows in chunks])):
        _set_rng_state(state)
        output = encoder(chunk)
        if not isinstance(output, Tensor) or output.shape != chunk_grad.shape:
            raise InputError(f"encode returned a different shape for a chunk of towers[{tower}] in its second "
                             f"pass ({tuple(getattr(output, 'shape', ()))} instead of {tuple(chunk_grad.shape)}); "
                             "it must be a deterministic function of its input and the random state.")
        if not output.requires_grad:
            raise ConfigError(f"the embeddings of towers[{tower}] require no grad in the second pass, so no "
                              "parameter would get a gradient; check that encode does not run under "
                              "torch.no_grad() and that the encoder has trainable parameters.")
        output.backward(chunk_grad)


def _first_pass(encode: Callable[[Any], Tensor] | Sequence[Callable[[Any], Tensor]], towers: Sequence[Tower],
                chunk_size: int) -> tuple[list[Callable[[Any], Tensor]], list[list[tuple[Tower, int]]], list[int],
                                          list[tuple[Tensor, list[_RNGState]]]]:
    """The checks and step (1) shared by both entry points: the encoder of each tower, its chunks,
    the CUDA devices whose random state matters, and each tower's embeddings and chunk states."""
    check_count("chunk_size", chunk_size, 1, "it is the number of rows encoded at once; pick the largest "
                                             "that fits in memory.")
    if not isinstance(towers, (list, tuple)) or not towers:
        raise InputError(f"towers must be a non-empty list or tuple of towers (a Tensor or dict of Tensors "
                         f"each), got {type(towers).__name__}; wrap a single tower as [tower].")
    rows = [_check_tower(index, tower) for index, tower in enumerate(towers)]
    if isinstance(encode, (list, tuple, nn.ModuleList)):
        if len(encode) != len(towers):
            raise ConfigError(f"encode holds {len(encode)} encoders for {len(towers)} towers; give one per "
                              "tower, or a single encoder for all.")
        encoders = list(encode)
    else:
        encoders = [encode] * len(towers)
    cuda_devices = _cuda_devices(towers)
    chunks = [_chunks(tower, tower_rows, chunk_size) for tower, tower_rows in zip(towers, rows)]
    first_pass = [_encode_without_graph(encoder, tower_chunks, index, cuda_devices)
                  for index, (encoder, tower_chunks) in enumerate(zip(encoders, chunks))]
    return encoders, chunks, cuda_devices, first_pass


def grad_cache_step(encode: Callable[[Any], Tensor] | Sequence[Callable[[Any], Tensor]],
                    towers: Sequence[Tower], loss_fn: Callable[[list[Tensor]], Tensor], *,
                    chunk_size: int) -> Tensor:
    """One GradCache forward and backward (see the module docstring): accumulates into the
    parameters' ``.grad`` the gradients of ``loss_fn`` on the embeddings of the whole batch,
    while holding the activations of only ``chunk_size`` rows at a time.

    Call it where a training loop calls ``loss.backward()``: zero the gradients before it and step
    the optimizer after it, as usual.

    Memory and cost: the graph of one chunk's forward pass, the (N, D) embeddings of every tower
    and their gradients, and loss_fn's own graph (e.g. N x N logits) are all that is held at once,
    in place of the activations of the whole batch; the price is a second forward pass of every
    chunk (about a third more compute than the plain step).

    The parameter gradients are those of the plain step under these conditions:

    * ``loss_fn`` must take the encoder's outputs only through its argument: it must not encode
      anything itself. Anything else it uses (a learnable temperature, a memory queue) gets its
      gradient from step (2) as usual.
    * Random state: torch's CPU generator and, where CUDA is initialised, the generators of the
      current CUDA device and of the devices the towers are on are saved before each chunk's first
      forward and restored for its second, as torch.utils.checkpoint does; other accelerators'
      generators are not, so turn dropout off there. The dropout masks are thus those of encoding
      the batch chunk by chunk (an equally random draw, but not the one a single forward of the
      whole batch would make), and after the step the generators are where encoding each chunk
      once and computing the loss would leave them.
    * BatchNorm in training mode normalises each chunk by its own statistics, so its gradients are
      not the whole batch's (use LayerNorm, or eval-mode BatchNorm); its running statistics are
      also updated by both passes.
    * Autocast: the caller's autocast context applies to both passes and to ``loss_fn``, the
      same in each; this function leaves precision to the caller. With a GradScaler, scale inside
      ``loss_fn`` (``lambda e: scaler.scale(loss(e))``): the returned loss is then the scaled one.
    * Under DistributedDataParallel each chunk's backward would all-reduce the gradients: run the
      step inside ``no_sync()`` and all-reduce the gradients once after it.

    Args:
        encode: the encoder, called on one chunk of a tower and returning its (rows, D)
            embeddings (e.g. ``lambda batch: model(**batch).pooler_output``); or a list with one
            encoder per tower (e.g. a query encoder and a passage encoder).
        towers: the inputs of each side of the pairs (e.g. the anchors' batch and the positives'
            batch), each a Tensor or a dict of Tensors (input_ids, attention_mask) with one row
            per sample. Towers may have different numbers of rows (e.g. k hard negatives each).
        loss_fn: maps the list of every tower's (rows, D) embeddings, in the order of
            ``towers``, to the scalar loss (e.g. ``lambda e: pair_info_nce(*e)``). A tower it does
            not use gets no gradient and is not encoded a second time.
        chunk_size: rows per forward pass (the last chunk of a tower may be shorter).

    Returns:
        The loss, detached.

    Example:
        >>> from contrastkit.losses import pair_info_nce
        >>> encoder = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Dropout(0.1), torch.nn.Linear(32, 8))
        >>> questions, answers = torch.randn(64, 16), torch.randn(64, 16)
        >>> loss = grad_cache_step(encoder, [questions, answers], lambda e: pair_info_nce(*e), chunk_size=16)
        >>> encoder[0].weight.grad.shape
        torch.Size([32, 16])
    """
    # (1) Encode without a graph, saving the random state each chunk starts from.
    encoders, chunks, cuda_devices, first_pass = _first_pass(encode, towers, chunk_size)
    embeddings = [tower_embeddings for tower_embeddings, _ in first_pass]

    # (2) The loss on the whole batch's embeddings, back-propagated to them only.
    loss = loss_fn(embeddings)
    if not isinstance(loss, Tensor) or loss.ndim != 0:
        raise InputError(f"loss_fn must return a scalar Tensor, got "
                         f"{tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__}.")
    if not loss.requires_grad:
        raise InputError("the loss does not depend on the embeddings passed to loss_fn (it requires no grad): "
                         "compute it from its argument, and call grad_cache_step with gradients enabled.")
    loss.backward()
    state_after_loss = _get_rng_state(cuda_devices)

    # (3) Encode again with a graph and back-propagate the cached gradients into the parameters.
    for index, (encoder, tower_chunks, (tower_embeddings, states)) in enumerate(zip(encoders, chunks, first_pass)):
        if tower_embeddings.grad is not None:  # None: loss_fn did not use this tower
            _backward_through_encoder(encoder, tower_chunks, index, states, tower_embeddings.grad)
    _set_rng_state(state_after_loss)
    return loss.detach()


class _Reencode(torch.autograd.Function):
    """Identity on the cached embeddings in forward; backward re-encodes every chunk with a graph
    and passes its slice of the incoming gradient into the encoder's parameters."""

    @staticmethod
    def forward(ctx: Any, anchor: Tensor, context: dict[str, Any], *embeddings: Tensor) -> tuple[Tensor, ...]:
        ctx.context = context
        return tuple(embedding.clone() for embedding in embeddings)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[None, ...]:
        context = ctx.context
        resume = _get_rng_state(context["cuda_devices"])  # backward leaves the random stream as it found it
        device_type, dtype, enabled = context["autocast"]
        with torch.enable_grad(), torch.autocast(device_type, dtype=dtype, enabled=enabled):
            for index, (encoder, chunks, states, grad) in enumerate(
                    zip(context["encoders"], context["chunks"], context["states"], grads)):
                if grad is not None:
                    _backward_through_encoder(encoder, chunks, index, states, grad)
        _set_rng_state(resume)
        return (None, None, *([None] * len(grads)))


def cached_embeddings(encode: Callable[[Any], Tensor] | Sequence[Callable[[Any], Tensor]],
                      towers: Sequence[Tower], *, chunk_size: int) -> list[Tensor]:
    """GradCache as a step of an ordinary graph: every tower's embeddings, encoded ``chunk_size``
    rows at a time without keeping activations; back-propagating into them (``loss.backward()``,
    a GradScaler's scaled backward included) re-encodes each chunk with a graph, from the random
    state of its first pass and under the autocast state of the call, and accumulates the
    parameters' gradients, which equal those of encoding each chunk with a graph (the conditions
    of :func:`grad_cache_step` apply). So a method computes its loss from these embeddings as from
    plain ones, and a training loop needs no change.

    Example:
        >>> from contrastkit.losses import pair_info_nce
        >>> encoder = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Dropout(0.1), torch.nn.Linear(32, 8))
        >>> anchors, positives = cached_embeddings(encoder, [torch.randn(64, 16), torch.randn(64, 16)], chunk_size=16)
        >>> pair_info_nce(anchors, positives).backward()
        >>> encoder[0].weight.grad.shape
        torch.Size([32, 16])
    """
    encoders, chunks, cuda_devices, first_pass = _first_pass(encode, towers, chunk_size)
    first = towers[0] if isinstance(towers[0], Tensor) else next(iter(towers[0].values()))
    device_type = first.device.type
    context = {"encoders": encoders, "chunks": chunks, "states": [states for _, states in first_pass],
               "cuda_devices": cuda_devices,
               "autocast": (device_type, torch.get_autocast_dtype(device_type), torch.is_autocast_enabled(device_type))}
    # A leaf that requires grad ties the outputs into autograd's graph, so that its backward runs.
    anchor = torch.empty(0, requires_grad=True)
    return list(_Reencode.apply(anchor, context, *[embeddings.detach() for embeddings, _ in first_pass]))
