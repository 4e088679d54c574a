"""Forward and backward time, TFLOP/s, peak memory and accuracy of the InfoNCE, CLIP and SigLIP losses by batch
size, as JSON (one line per loss and batch size as it is measured, then the whole table).

For each batch of N pairs (two views, or image and text, of dim --dim) it times the loss and the
gradient of its inputs: the median of --repeats runs after one warm-up of the forward, of the
backward and of the two together (CUDA events on CUDA, perf_counter elsewhere), records the
peak memory allocated beyond the inputs (CUDA only: torch's allocator counts every tensor; on a
CPU there is no such counter, so memory is null), and compares the loss and the gradients with a
float64 reference (up to --reference-up-to pairs; null above): the tiled path run in float64 for
InfoNCE and CLIP, and for SigLIP its formula in float64 written below, a block of rows at a time
(the whole N x N float64 matrix would be 32 GiB at 65,536 pairs).

Work and TFLOP/s. The work counted is the three matmuls of the logits, 2 FLOPs per multiply-add:
one forward (the logits) and two backward (the gradients of rows and of columns), so 6 R C d for
R rows against C columns of dim d:

    InfoNCE   6 (2N)^2 d    the 2N rows of both views against the same 2N rows
    CLIP      6 N^2 d       the N x N image-text logits, computed once for both directions
    SigLIP    6 N^2 d       the N x N image-text logits

tflops = work / median forward+backward seconds / 1e12. Kernels that recompute the logits in
backward (fused, tiled) do more than this; the count is the same for every contender, so tflops
ranks them as time does.

Contenders (--contenders picks them by the names in brackets; by default all that can run here):
contrastkit's fused Triton kernels [fused] (where they run: CUDA with Triton, or the CPU under
TRITON_INTERPRET=1), contrastkit's tiled path [tiled], contrastkit's plain path [plain], the
textbook NT-Xent written below in plain torch [textbook] (concatenate, normalise, matmul, mask the
diagonal, cross-entropy, all in the input dtype) and the same in bf16 from float32 inputs
[textbook_bf16], and lightly's NTXentLoss [lightly] when lightly is installed. CLIP: fused, tiled
and plain. SigLIP (sigmoid_loss): fused and plain. A loss none of whose contenders is picked is left out.
A run that runs out of memory is reported as "oom".

Budget: the run starts no measurement once --budget-seconds of wall-clock time are spent, nor one
that the same contender's last size predicts would overrun what is left (its time per call
scaled by the square of the size ratio, times the warm-up and repeats): such a row, or contender,
reads {"skipped": "budget"}. A measurement under way is not cut short.

    python benchmarks/loss_kernels.py --device cuda                  # the GPU table, 4096..1048576 pairs
    python benchmarks/loss_kernels.py --device cuda --dtype bf16     # bf16 inputs (textbook loss in bf16)
    python benchmarks/loss_kernels.py --device cuda --contenders fused plain textbook textbook_bf16 \\
        --budget-seconds 200                                         # without the slow tiled path, < 4 min
    python benchmarks/loss_kernels.py --device cpu --sizes 512 2048  # a smoke run; keep sizes small on a CPU
    TRITON_INTERPRET=1 python benchmarks/loss_kernels.py --device cpu --sizes 128 --repeats 1 \\
        --contenders fused plain                                     # the kernels in Triton's interpreter
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

from contrastkit.losses import clip_loss, fused, info_nce, sigmoid_loss
from contrastkit.losses.tiled import DEFAULT_TILE_SIZE, tiled_clip_loss, tiled_info_nce
from contrastkit.runs import pick_device

DEFAULT_SIZES = [4096, 8192, 16384, 32768, 65536, 131072, 262144, 1048576]
# --contenders name -> the key of its figures in the JSON.
CONTENDERS = {"fused": "contrastkit_fused", "tiled": "contrastkit_tiled", "plain": "contrastkit_plain",
              "textbook": "torch_textbook", "textbook_bf16": "torch_textbook_bf16", "lightly": "lightly"}
# Rows of the SigLIP float64 reference per block: 4096 x 65536 float64 logits are 2 GiB a matrix.
SIGLIP_REFERENCE_ROWS = 4096
LossFn = Callable[..., Tensor]
Reference = tuple[Tensor, list[Tensor]]


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
    elif device.type == "mps":
        torch.mps.synchronize()


def work(loss: str, pairs: int, dim: int) -> int:
    """FLOPs of one forward+backward as the module docstring counts them: 6 R C d, R = C rows."""
    rows = 2 * pairs if loss == "info_nce" else pairs
    return 6 * rows * rows * dim


def timed_call(loss_fn: LossFn, inputs: list[Tensor], device: torch.device) -> tuple[float, float]:
    """Seconds of the forward and of the backward of one call."""
    if device.type == "cuda":
        # Events time the GPU's stream, where host timers would time the launches; the forward's
        # end is marked without a host sync, so the backward is queued as in training.
        stream = torch.cuda.current_stream(device)
        start, middle, end = (torch.cuda.Event(enable_timing=True) for _ in range(3))
        synchronize(device)
        start.record(stream)
        loss = loss_fn(*inputs)
        middle.record(stream)
        torch.autograd.grad(loss, inputs)
        end.record(stream)
        end.synchronize()
        return start.elapsed_time(middle) / 1e3, middle.elapsed_time(end) / 1e3
    synchronize(device)
    start = time.perf_counter()
    loss = loss_fn(*inputs)
    synchronize(device)
    middle = time.perf_counter()
    torch.autograd.grad(loss, inputs)
    synchronize(device)
    return middle - start, time.perf_counter() - middle


def measure(loss_fn: LossFn, inputs: list[Tensor], reference: Reference | None, device: torch.device,
            repeats: int, flops: int) -> dict | str:
    """Median seconds of forward+backward, and of each, TFLOP/s, peak extra MiB (CUDA) and errors
    against ``reference``."""
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
        forward, backward = zip(*(timed_call(loss_fn, inputs, device) for _ in range(repeats)))
    except RuntimeError as error:
        if not is_out_of_memory(error):
            raise
        return "oom"
    # The median of the totals, not the sum of the two medians: the total of one same run.
    seconds = statistics.median(f + b for f, b in zip(forward, backward))
    return {"seconds": seconds, "forward_ms": statistics.median(forward) * 1e3,
            "backward_ms": statistics.median(backward) * 1e3, "tflops": flops / seconds / 1e12,
            "peak_extra_mib": None if peak is None else peak / 2**20, **errors}


def float64_reference(loss_fn: LossFn, inputs: list[Tensor]) -> Reference:
    exact_inputs = [tensor.detach().double().requires_grad_() for tensor in inputs]
    loss, grads = loss_and_gradients(loss_fn, exact_inputs)
    return loss.detach(), [grad.detach() for grad in grads]


def siglip_float64_reference(inputs: list[Tensor]) -> Reference:
    """SigLIP's loss sum_ij -log sigmoid(z_ij (exp(t') x_i.y_j + b)) / N (x, y normalised, z = +1 on
    the diagonal, -1 elsewhere) and its gradients in float64, a block of rows at a time: the loss is
    a sum over rows, so the blocks' gradients add up, and no N x N float64 matrix is held whole."""
    x, y, log_scale, bias = (tensor.detach().double().requires_grad_() for tensor in inputs)
    leaves = [x, y, log_scale, bias]
    num_rows = x.shape[0]
    loss = torch.zeros((), dtype=torch.float64, device=x.device)
    grads = [torch.zeros_like(leaf) for leaf in leaves]
    for first in range(0, num_rows, SIGLIP_REFERENCE_ROWS):
        rows = F.normalize(x[first:first + SIGLIP_REFERENCE_ROWS], dim=1)
        logits = log_scale.exp() * (rows @ F.normalize(y, dim=1).T) + bias
        sign = -torch.ones_like(logits)
        index = torch.arange(rows.shape[0], device=x.device)
        sign[index, first + index] = 1
        part = -F.logsigmoid(sign * logits).sum() / num_rows
        for total, grad in zip(grads, torch.autograd.grad(part, leaves)):
            total += grad
        loss += part.detach()
    return loss, grads


def make_pair(pairs: int, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> list[Tensor]:
    """Two related (N, dim) embeddings: the second is the first plus noise, so positives stand out."""
    generator = torch.Generator(device=device).manual_seed(pairs)
    first = torch.randn(pairs, args.dim, generator=generator, device=device)
    second = first + 0.5 * torch.randn(pairs, args.dim, generator=generator, device=device)
    return [first.to(dtype).requires_grad_(), second.to(dtype).requires_grad_()]


class Budget:
    """Wall-clock seconds left to the run, and whether a measurement is likely to fit in them,
    judged from the same (loss, contender)'s last measured size: the work grows as N^2."""

    def __init__(self, seconds: float, repeats: int) -> None:
        self.deadline = time.perf_counter() + seconds
        self.calls = repeats + 1  # the warm-up, then the timed repeats
        self.last: dict[tuple[str, str], tuple[int, float]] = {}  # -> (pairs, seconds per call)

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def estimate(self, key: tuple[str, str], pairs: int) -> float | None:
        """Predicted seconds of measuring ``key`` at ``pairs``; None before its first measurement."""
        if key not in self.last:
            return None
        last_pairs, seconds = self.last[key]
        return self.calls * seconds * (pairs / last_pairs) ** 2

    def record(self, key: tuple[str, str], pairs: int, figures: dict | str) -> None:
        if isinstance(figures, dict):
            self.last[key] = (pairs, figures["seconds"])


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
    parser.add_argument("--contenders", nargs="+", choices=list(CONTENDERS), default=list(CONTENDERS),
                        metavar="NAME", help=f"contenders to run, of {', '.join(CONTENDERS)} (default: all that "
                        "can run here)")
    parser.add_argument("--budget-seconds", type=float, default=200.0,
                        help="wall-clock seconds after which no new measurement starts (default: 200)")
    args = parser.parse_args()
    budget = Budget(args.budget_seconds, args.repeats)
    device = pick_device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    t, tile = args.temperature, args.tile_size
    chosen = {CONTENDERS[name] for name in args.contenders}
    lightly = lightly_nt_xent(t)
    # Fused first in each row: with a budget, the kernels under study are measured before the slow paths.
    info_nce_losses: dict[str, LossFn] = {}
    clip_losses: dict[str, LossFn] = {}
    siglip_losses: dict[str, LossFn] = {}
    if fused.available(device):
        info_nce_losses["contrastkit_fused"] = lambda a, b: info_nce(a, b, temperature=t, fused=True, validate=False)
        clip_losses["contrastkit_fused"] = lambda x, y, s: clip_loss(x, y, s, fused=True, validate=False)
        siglip_losses["contrastkit_fused"] = lambda x, y, s, b: sigmoid_loss(x, y, s, b, fused=True, validate=False)
    info_nce_losses.update({
        "contrastkit_tiled": lambda a, b: tiled_info_nce(a, b, temperature=t, tile_size=tile, validate=False),
        "contrastkit_plain": lambda a, b: info_nce(a, b, temperature=t, tiled=False, validate=False, fused=False),
        "torch_textbook": lambda a, b: textbook_nt_xent(a, b, t),
    })
    if dtype == torch.float32:  # the fast baseline the kernel must beat: the textbook loss in bf16
        info_nce_losses["torch_textbook_bf16"] = lambda a, b: textbook_nt_xent(a.bfloat16(), b.bfloat16(), t)
    if not isinstance(lightly, str):
        info_nce_losses["lightly"] = lightly
    clip_losses.update({
        "contrastkit_tiled": lambda x, y, s: tiled_clip_loss(x, y, s, tile_size=tile, validate=False),
        "contrastkit_plain": lambda x, y, s: clip_loss(x, y, s, tiled=False, validate=False, fused=False),
    })
    siglip_losses["contrastkit_plain"] = lambda x, y, s, b: sigmoid_loss(x, y, s, b, fused=False, validate=False)
    # Chosen but unable to run here: said in the table, not silently dropped.
    not_run = {key: why for key, why in (
        ("contrastkit_fused", "needs CUDA with Triton, or the CPU under TRITON_INTERPRET=1"),
        ("torch_textbook_bf16", "the inputs are bf16 already: torch_textbook is the bf16 textbook loss"),
        ("lightly", lightly if isinstance(lightly, str) else ""),
    ) if key in chosen and key not in info_nce_losses}
    logit_scale = torch.tensor(math.log(1 / 0.07), device=device, requires_grad=True)
    # SigLIP's initial log-scale and bias, log 10 and -10.
    siglip_scalars = [torch.tensor(value, device=device, requires_grad=True) for value in (math.log(10), -10.0)]
    reference_fns: dict[str, Callable[[list[Tensor]], Reference]] = {
        "info_nce": lambda inputs: float64_reference(
            lambda a, b: tiled_info_nce(a, b, temperature=t, tile_size=tile, validate=False), inputs),
        "clip": lambda inputs: float64_reference(
            lambda x, y, s: tiled_clip_loss(x, y, s, tile_size=tile, validate=False), inputs),
        "siglip": siglip_float64_reference,
    }
    families = [(name, {key: fn for key, fn in losses.items() if key in chosen}, extra)
                for name, losses, extra in (("info_nce", info_nce_losses, []), ("clip", clip_losses, [logit_scale]),
                                            ("siglip", siglip_losses, siglip_scalars))]
    families = [family for family in families if family[1]]
    results: dict[str, list] = {name: [] for name, _, _ in families}
    for pairs in args.sizes:
        for name, losses, extra in families:
            row: dict = {"pairs": pairs}
            if budget.left() <= 0:
                row["skipped"] = "budget"
            else:
                inputs = make_pair(pairs, args, device, dtype) + extra
                reference: Reference | None = None
                for contender, loss_fn in losses.items():
                    estimate = budget.estimate((name, contender), pairs)
                    if budget.left() <= 0 or (estimate is not None and estimate > budget.left()):
                        row[contender] = {"skipped": "budget", "estimated_seconds": estimate}
                        continue
                    # Computed once per row, and only when some contender is measured against it.
                    if reference is None and pairs <= args.reference_up_to:
                        reference = reference_fns[name](inputs)
                    row[contender] = measure(loss_fn, inputs, reference, device, args.repeats,
                                             work(name, pairs, args.dim))
                    budget.record((name, contender), pairs, row[contender])
                del inputs, reference
            results[name].append(row)
            # Each row as soon as it is measured: a run cut short by a time limit keeps its figures.
            print(json.dumps({"loss": name, **row}), flush=True)
    print(json.dumps({
        "date": date.today().isoformat(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
        f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__, "input_dtype": args.dtype, "dim": args.dim, "views": 2,
        "temperature": t, "clip_logit_scale": "log(1/0.07)", "siglip_logit_scale_and_bias": "log(10), -10",
        "tile_size": tile, "repeats": args.repeats, "contenders": args.contenders, "not_run": not_run,
        "budget_seconds": args.budget_seconds, "elapsed_seconds": args.budget_seconds - budget.left(),
        "seconds": "median forward+backward (gradients of the inputs)",
        "forward_ms, backward_ms": "median of each part; CUDA events on CUDA, perf_counter elsewhere",
        "tflops": "work / seconds / 1e12; work = 6 (2N)^2 d for InfoNCE, 6 N^2 d for CLIP and SigLIP",
        "peak_extra_mib": "CUDA max_memory_allocated beyond the inputs; null on a CPU (no allocator counter)",
        "reference": f"float64, for N <= {args.reference_up_to} (errors are null above): contrastkit's tiled "
                     "path for InfoNCE and CLIP, SigLIP's formula by blocks of rows (siglip_float64_reference)",
        "skipped": "budget: not started, the --budget-seconds were spent or would be by the predicted time",
        "lightly": lightly if isinstance(lightly, str) else "NTXentLoss",
        **results,
    }, indent=1))


if __name__ == "__main__":
    main()
