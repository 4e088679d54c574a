"""Which tiles, warps and pipeline stages make the fused loss kernels fastest on this GPU, as JSON.

For each kernel of :mod:`contrastkit.losses.fused` it times a fused loss of N pairs (bf16, dim
--dim) with each candidate launch configuration (BLOCK_M, BLOCK_N, num_warps, num_stages), the
other kernels at their current settings (median of 5 after a warm-up, CUDA events): ``forward``
by InfoNCE's forward alone; ``symmetric_grad`` (InfoNCE's backward on one process) by InfoNCE's
forward + backward minus its forward; ``row_grad`` and ``column_grad`` (the backward of CLIP, MoCo
and InfoNCE with a queue or gathered columns) the same way through CLIP's two directions. A
configuration the GPU cannot run (too little shared memory) is reported with its error. It keeps
each kernel's fastest before sweeping the next and prints the whole sweep, then the forward and
forward + backward times with the chosen settings; ``LAUNCH_16_BIT`` in the module is where a
measured choice goes.

    python benchmarks/loss_kernel_tiles.py                  # 16,384 pairs, d=128
    python benchmarks/loss_kernel_tiles.py --pairs 65536 --dim 256
"""

from __future__ import annotations

import argparse
import json
from typing import Callable

import torch
import torch.nn.functional as F

from contrastkit.losses import clip_loss, fused, info_nce

CANDIDATES: dict[str, list[tuple[int, int, int, int]]] = {
    "forward": [(128, 64, 8, 3), (128, 64, 4, 3), (64, 64, 4, 3), (128, 128, 8, 2), (64, 128, 4, 3), (128, 32, 4, 4)],
    "symmetric_grad": [(64, 64, 4, 3), (128, 64, 8, 3), (64, 128, 4, 3), (128, 64, 4, 3), (64, 64, 4, 2),
                       (128, 32, 4, 3)],
    "row_grad": [(64, 64, 4, 3), (128, 64, 8, 3), (64, 128, 4, 3), (128, 128, 8, 2), (64, 64, 4, 2), (128, 32, 4, 3)],
    "column_grad": [(64, 64, 4, 3), (64, 128, 8, 3), (128, 64, 4, 3), (128, 128, 8, 2), (64, 64, 4, 2),
                    (32, 128, 4, 3)],
}
FIELDS = ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages")


def median_ms(fn: Callable[[], None], repeats: int = 5) -> float:
    fn()  # warm-up, and the compile of a new configuration
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=16384)
    parser.add_argument("--dim", type=int, default=128)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this sweep times CUDA kernels: run it on a GPU")
    torch.manual_seed(0)
    views = [F.normalize(torch.randn(args.pairs, args.dim, device="cuda"), dim=1).bfloat16().requires_grad_()
             for _ in range(2)]

    def forward() -> None:
        with torch.no_grad():
            info_nce(*views, temperature=0.1, similarity="dot", fused=True)

    def forward_backward() -> None:
        info_nce(*views, temperature=0.1, similarity="dot", fused=True).backward()
        views[0].grad = views[1].grad = None

    logit_scale = torch.tensor(2.66, device="cuda")

    def clip_forward() -> None:
        with torch.no_grad():
            clip_loss(*views, logit_scale, fused=True)

    def clip_forward_backward() -> None:
        clip_loss(*views, logit_scale, fused=True).backward()
        views[0].grad = views[1].grad = None

    timed_by = {"forward": (forward, None), "symmetric_grad": (forward_backward, forward),
                "row_grad": (clip_forward_backward, clip_forward), "column_grad": (clip_forward_backward, clip_forward)}

    report: dict[str, object] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                 "pairs": args.pairs, "dim": args.dim, "sweep": {}}
    for kernel, candidates in CANDIDATES.items():
        results = []
        for config in candidates:
            fused.LAUNCH_16_BIT[kernel] = dict(zip(FIELDS, config))
            try:
                whole, part = timed_by[kernel]
                ms = median_ms(whole) - (median_ms(part) if part else 0.0)
                results.append({"config": list(config), "ms": round(ms, 3)})
            except Exception as error:  # a configuration this GPU cannot run, e.g. out of shared memory
                results.append({"config": list(config), "error": " ".join(str(error).split())[:200]})
        timed = [result for result in results if "ms" in result]
        best = min(timed, key=lambda result: result["ms"])["config"] if timed else candidates[0]
        fused.LAUNCH_16_BIT[kernel] = dict(zip(FIELDS, best))
        report["sweep"][kernel] = {"results": results, "chosen": fused.LAUNCH_16_BIT[kernel]}
    report["forward_ms"] = round(median_ms(forward), 3)
    report["forward_backward_ms"] = round(median_ms(forward_backward), 3)
    report["clip_forward_backward_ms"] = round(median_ms(clip_forward_backward), 3)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
