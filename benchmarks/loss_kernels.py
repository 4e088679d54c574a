"""Forward+backward time, peak memory and accuracy of the InfoNCE and CLIP losses by batch size, as JSON
(one line per loss and batch size as it is measured, then the whole table).

For each batch of N pairs (two views, or image and text, of dim --dim) it times the loss and the
gradient of its inputs (median of --repeats runs after one warm-up, CUDA-synchronised), records the
peak memory allocated beyond the inputs (CUDA only: torch's allocator counts every tensor; on a
CPU there is no such counter, so memory is null), and compares the loss and the gradients with a
float64 reference, the tiled path run in float64 (up to --reference-up-to pairs; null above).

InfoNCE contenders: contrastkit's fused Triton kernels (where they run: CUDA with Triton),
contrastkit's tiled path, contrastkit's plain path, the textbook NT-Xent
written below in plain torch (concatenate, normalise, matmul, mask the diagonal, cross-entropy, all
in the input dtype, and in bf16 from float32 inputs), and lightly's NTXentLoss when lightly is
installed. CLIP: fused (where it runs), tiled and plain.
A run that runs out of memory is reported as "oom".

    python benchmarks/loss_kernels.py --device cuda                  # the GPU table, 4096..1048576 pairs
    python benchmarks/loss_kernels.py --device cuda --dtype bf16     # bf16 inputs (textbook loss in bf16)
    python benchmarks/loss_kernels.py --device cpu --sizes 512 2048  # a smoke run; keep sizes small on a CPU
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from datetime import date
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit.losses import clip_loss, fused, info_nce
from contrastkit.losses.tiled import DEFAULT_TILE_SIZE, tiled_clip_loss, tiled_info_nce
from contrastkit.runs import pick_device

DEFAULT_SIZES = [4096, 8192, 16384, 32768, 65536, 131072, 262144, 1048576]
LossFn = Callable[..., Tensor]


def textbook_nt_xent(z_a: Tensor, z_b: Tensor, temperature: float) -> Tensor:
    """SimCLR's NT-Xent as usually written: the full (2N x 2N) logits, in the inputs' dtype."""
    z = F.normalize(torch.cat([z_a, z_b]), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    batch = z_a.shape[0]
    targets = torch.cat([torch.arange(batch, 2 * batch, device=z.device), torch.arange(batch, device=z.device)])
    return F.cross_entropy(logits, targets)


def lightly_nt_xent(temperature: float) -> LossFn | str:
    """lightly's NTXentLoss as a function of two views, or why it is skipped."""
    try:
        from lightly.loss import NTXentLoss
    except ImportError as error:
        return f"skipped: lightly does not import ({error})"
    loss_fn = NTXentLoss(temperature=temperature)
    return lambda z_a, z_b: loss_fn(z_a, z_b)


def is_out_of_memory(error: RuntimeError) -> bool:
    message = str(error).lower()
    return isinstance(error, torch.cuda.OutOfMemoryError) or any(
        words in message for words in ("out of memory", "can't allocate"))


def loss_and_gradients(loss_fn: LossFn, inputs: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
    loss = loss_fn(*inputs)
    return loss, list(torch.autograd.grad(loss, inputs))


def relative_error(values: list[Tensor], references: list[Tensor]) -> float:
    """||values - references|| / ||references||, all the tensors flattened into one vector, in float64."""
    value, reference = (torch.cat([t.detach().double().flatten() for t in ts]) for ts in (values, references))
    return float((value - reference).norm() / reference.norm())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(loss_fn: LossFn, inputs: list[Tensor], reference: tuple[Tensor, list[Tensor]] | None,
            device: torch.device, repeats: int) -> dict | str:
    """Median seconds of forward+backward, peak extra MiB (CUDA) and errors against ``reference``."""
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        loss, grads = loss_and_gradients(loss_fn, inputs)  # warm-up, and the values compared
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - baseline if device.type == "cuda" else None
        errors = {"loss_rel_error": None, "grad_rel_error": None}
        if reference is not None:
            errors = {"loss_rel_error": relative_error([loss], [reference[0]]),
                      "grad_rel_error": relative_error(grads, reference[1])}
        del loss, grads
        seconds = []
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            loss_and_gradients(loss_fn, inputs)
            synchronize(device)
            seconds.append(time.perf_counter() - start)
    except RuntimeError as error:
        if not is_out_of_memory(error):
            raise
        return "oom"
    return {"seconds": statistics.median(seconds), "peak_extra_mib": None if peak is None else peak / 2**20,
            **errors}


def float64_reference(loss_fn: LossFn, inputs: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
    exact_inputs = [tensor.detach().double().requires_grad_() for tensor in inputs]
    loss, grads = loss_and_gradients(loss_fn, exact_inputs)
    return loss.detach(), [grad.detach() for grad in grads]


def make_pair(pairs: int, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> list[Tensor]:
    """Two related (N, dim) embeddings: the second is the first plus noise, so positives stand out."""
    generator = torch.Generator(device=device).manual_seed(pairs)
    first = torch.randn(pairs, args.dim, generator=generator, device=device)
    second = first + 0.5 * torch.randn(pairs, args.dim, generator=generator, device=device)
    return [first.to(dtype).requires_grad_(), second.to(dtype).requires_grad_()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=DEFAULT_SIZES, help="batch sizes N (pairs)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--tile-size", type=int, default=DEFAULT_TILE_SIZE)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference-up-to", type=int, default=65536,
                        help="largest N for which the float64 reference is computed")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bf16"], help="dtype of the inputs")
    args = parser.parse_args()
    device = pick_device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    t, tile = args.temperature, args.tile_size
    lightly = lightly_nt_xent(t)
    info_nce_losses: dict[str, LossFn] = {
        "contrastkit_tiled": lambda a, b: tiled_info_nce(a, b, temperature=t, tile_size=tile, validate=False),
        "contrastkit_plain": lambda a, b: info_nce(a, b, temperature=t, tiled=False, validate=False, fused=False),
        "torch_textbook": lambda a, b: textbook_nt_xent(a, b, t),
    }
    if dtype == torch.float32:  # the fast baseline the kernel must beat: the textbook loss in bf16
        info_nce_losses["torch_textbook_bf16"] = lambda a, b: textbook_nt_xent(a.bfloat16(), b.bfloat16(), t)
    if fused.available(device):
        info_nce_losses["contrastkit_fused"] = lambda a, b: info_nce(a, b, temperature=t, fused=True, validate=False)
    if not isinstance(lightly, str):
        info_nce_losses["lightly"] = lightly
    logit_scale = torch.tensor(math.log(1 / 0.07), device=device, requires_grad=True)
    clip_losses: dict[str, LossFn] = {
        "contrastkit_tiled": lambda x, y, s: tiled_clip_loss(x, y, s, tile_size=tile, validate=False),
        "contrastkit_plain": lambda x, y, s: clip_loss(x, y, s, tiled=False, validate=False, fused=False),
    }
    if fused.available(device):
        clip_losses["contrastkit_fused"] = lambda x, y, s: clip_loss(x, y, s, fused=True, validate=False)
    results: dict[str, list] = {"info_nce": [], "clip": []}
    for pairs in args.sizes:
        for name, losses, extra in (("info_nce", info_nce_losses, []), ("clip", clip_losses, [logit_scale])):
            inputs = make_pair(pairs, args, device, dtype) + extra
            reference = (float64_reference(losses["contrastkit_tiled"], inputs)
                         if pairs <= args.reference_up_to else None)
            row = {"pairs": pairs}
            for contender, loss_fn in losses.items():
                row[contender] = measure(loss_fn, inputs, reference, device, args.repeats)
            results[name].append(row)
            # Each row as soon as it is measured: a run cut short by a time limit keeps its figures.
            print(json.dumps({"loss": name, **row}), flush=True)
            del inputs, reference
    print(json.dumps({
        "date": date.today().isoformat(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
        f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__, "input_dtype": args.dtype, "dim": args.dim, "views": 2,
        "temperature": t, "clip_logit_scale": "log(1/0.07)", "tile_size": tile, "repeats": args.repeats,
        "seconds": "median forward+backward (gradients of the inputs)",
        "peak_extra_mib": "CUDA max_memory_allocated beyond the inputs; null on a CPU (no allocator counter)",
        "reference": f"contrastkit tiled path in float64, for N <= {args.reference_up_to}; errors are null above",
        "lightly": lightly if isinstance(lightly, str) else "NTXentLoss",
        **results,
    }, indent=1))


if __name__ == "__main__":
    main()
