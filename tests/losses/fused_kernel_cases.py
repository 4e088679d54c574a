"""Run with TRITON_INTERPRET=1 (test_fused_info_nce.py starts it so): the fused InfoNCE kernels
on small cases against the float64 torch loss, values and gradients. Prints one JSON line with
each case's relative errors; the distributed case raises if its gradients differ."""

import json
import math
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from contrastkit._triton import tl, triton
from contrastkit.losses import clip_loss, fused, info_nce, moco_info_nce, sigmoid_loss

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from loss_helpers import assert_averaged_over_processes_equal, run_in_process_group  # noqa: E402
from triton_interpreter import patch_loop_bounds  # noqa: E402

patch_loop_bounds()

# name: (views, samples, dim, extra negatives, temperature, similarity, dtype)
CASES = {
    "two views, uneven tile and dim": (2, 5, 7, 0, 0.5, "dot", torch.float32),
    "three views, cosine": (3, 30, 20, 0, 0.1, "cosine", torch.float32),
    "four views and a queue": (4, 17, 40, 13, 0.2, "cosine", torch.float32),
    "several tiles each way": (2, 70, 33, 0, 0.07, "cosine", torch.float32),
    # Batches wider than a tile: most tiles hold no positive and take the kernels' unmasked branch,
    # with the anchors as columns (one backward kernel) and with a queue (two).
    "tiles without positives": (2, 200, 16, 0, 0.1, "dot", torch.float32),
    "tiles without positives, a queue": (3, 90, 16, 70, 0.2, "cosine", torch.float32),
    # Unit rows rounded to the dtype, compared on dot similarity: the kernel's own error, not
    # the rounding of rows it normalised in float32 and handed on in 16 bits.
    "bfloat16": (2, 40, 32, 9, 0.1, "dot", torch.bfloat16),
    "float16": (2, 40, 32, 9, 0.1, "dot", torch.float16),
    "bfloat16, tiles without positives": (2, 300, 64, 0, 0.1, "dot", torch.bfloat16),
}


def relative(actual, reference):
    return ((actual.double() - reference).norm() / reference.norm()).item()


def errors(results, dtype):
    """Relative errors of the kernel's (loss, gradients) against the reference's, and what
    storing the exact gradients in the inputs' dtype alone costs: the floor of any kernel."""
    (reference, reference_grads), (value, grads) = results
    floor = max(relative(expected.to(dtype), expected) for expected in reference_grads)
    return {"value": abs(value.item() - reference.item()) / abs(reference.item()),
            "grad": max(relative(grad, expected) for grad, expected in zip(grads, reference_grads)),
            "grad_rounding_floor": floor}


def textbook_errors(textbook, inputs, reference_grads, dtype):
    """The gradient error, against the float64 reference, of the loss written as usual in torch in
    the 16-bit ``dtype`` itself (logits and softmax in that dtype): what the kernels must not exceed."""
    tensors = [tensor.to(dtype).requires_grad_() for tensor in inputs]
    grads = torch.autograd.grad(textbook(*tensors), tensors)
    return {"textbook_grad": max(relative(grad, expected) for grad, expected in zip(grads, reference_grads))}


def textbook_info_nce(temperature):
    """Two views (and a queue) on dot similarity, as NT-Xent is usually written."""
    def loss(z_a, z_b, *queue):
        anchors = torch.cat([z_a, z_b])
        logits = anchors @ torch.cat([anchors, *queue]).T / temperature
        logits[:, :anchors.shape[0]].fill_diagonal_(float("-inf"))
        batch = z_a.shape[0]
        targets = torch.cat([torch.arange(batch, 2 * batch), torch.arange(batch)])
        return F.cross_entropy(logits, targets)
    return loss


def textbook_paired(kind):
    """CLIP's two cross-entropies at the cases' log-scale 2.5, or SigLIP's sigmoid loss at log-scale
    2.3 and bias -3, on cosine similarity."""
    def loss(x, y):
        x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)
        if kind == "clip":
            logits = x @ y.T * math.exp(2.5)
            targets = torch.arange(x.shape[0])
            return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
        logits = x @ y.T * math.exp(2.3) - 3.0
        signs = 2 * torch.eye(x.shape[0], dtype=logits.dtype) - 1
        return -F.logsigmoid(signs * logits).sum() / x.shape[0]
    return loss


def run_case(views, samples, dim, extra, temperature, similarity, dtype):
    generator = torch.Generator().manual_seed(views * 100 + samples)
    # Inputs representable in the kernel's dtype, so both sides see the same numbers.
    inputs = [F.normalize(torch.randn(samples, dim, generator=generator), dim=1).to(dtype).double()
              for _ in range(views)]
    if extra:
        inputs.append(F.normalize(torch.randn(extra, dim, generator=generator), dim=1).to(dtype).double())
    reference_inputs = [tensor.clone().requires_grad_() for tensor in inputs]
    kernel_inputs = [tensor.to(dtype).requires_grad_() for tensor in inputs]
    results = []
    for tensors, in_kernels in ((reference_inputs, False), (kernel_inputs, True)):
        queue = tensors[views] if extra else None
        loss = info_nce(*tensors[:views], negatives=queue, temperature=temperature, similarity=similarity,
                        tiled=False, fused=in_kernels)
        results.append((loss, torch.autograd.grad(loss, tensors)))
    report = errors(results, dtype)
    if dtype != torch.float32:
        report.update(textbook_errors(textbook_info_nce(temperature), inputs, results[0][1], dtype))
    return report


def run_paired_case(loss, samples, queue, dim, dtype):
    """CLIP (both directions, learnable scale), SigLIP (learnable scale and bias) or MoCo (v3
    in-batch keys, v2 with a queue)."""
    generator = torch.Generator().manual_seed(samples + queue)
    count = 3 if queue else 2
    shapes = [(samples, dim), (samples, dim), (queue, dim)][:count]
    inputs = [F.normalize(torch.randn(*shape, generator=generator), dim=1).to(dtype).double() for shape in shapes]
    results = []
    for in_kernels, cast in ((False, torch.float64), (True, dtype)):
        tensors = [tensor.to(cast).requires_grad_() for tensor in inputs]
        if loss == "siglip":
            scalars = [torch.tensor(value, dtype=torch.float64).requires_grad_() for value in (2.3, -3.0)]
            tensors.extend(scalars)
            value = sigmoid_loss(tensors[0], tensors[1], *scalars, fused=in_kernels)
        elif loss == "clip":
            logit_scale = torch.tensor(2.5, dtype=torch.float64).requires_grad_()
            tensors.append(logit_scale)
            value = clip_loss(tensors[0], tensors[1], logit_scale, tiled=False, fused=in_kernels)
        else:
            value = moco_info_nce(tensors[0], tensors[1], negatives=tensors[2] if queue else None, temperature=0.2,
                                  fused=in_kernels)
        results.append((value, torch.autograd.grad(value, tensors)))
    report = errors(results, dtype)
    if dtype != torch.float32 and loss in ("clip", "siglip"):
        # The scalars are constants of the textbook loss: compare the rows' gradients only.
        report.update(textbook_errors(textbook_paired(loss), inputs, results[0][1][:2], dtype))
    return report


PAIRED_CASES = {
    "clip, uneven": ("clip", 37, 0, 20, torch.float32),
    "clip, several tiles": ("clip", 130, 0, 48, torch.float32),
    "clip, bfloat16": ("clip", 40, 0, 32, torch.bfloat16),
    "moco v3": ("moco", 50, 0, 24, torch.float32),
    "siglip, uneven": ("siglip", 37, 0, 20, torch.float32),
    "siglip, several tiles": ("siglip", 130, 0, 48, torch.float32),
    "siglip, bfloat16": ("siglip", 40, 0, 32, torch.bfloat16),
    "moco v2 with a queue": ("moco", 30, 70, 24, torch.float32),
}


# Samples per process in the gathered case: 2 views x 40 = 80 anchors a process, so the columns
# of rank 1's anchors start at 80, inside a 64-column tile.
PER_PROCESS = 40


def distributed_worker(rank, world, inputs, expected, moco_expected):
    shard = slice(rank * PER_PROCESS, (rank + 1) * PER_PROCESS)
    # MoCo v3 against every process's keys: query i of rank r has key PER_PROCESS * r + i.
    queries = inputs[0][shard].clone().float().requires_grad_()
    moco = moco_info_nce(queries, inputs[1][shard].float(), temperature=0.2, gather_across_processes=True, fused=True)
    moco_grad, = torch.autograd.grad(moco, [queries])
    assert_averaged_over_processes_equal([moco.detach().double()], moco_expected[:1], world, rtol=1e-5, atol=0,
                                         msg="moco loss")
    torch.testing.assert_close(moco_grad.double(), moco_expected[1][shard] * world, rtol=1e-4, atol=1e-6)
    views = [tensor[shard].clone().float().requires_grad_() for tensor in inputs]
    loss = info_nce(*views, temperature=0.2, gather_across_processes=True, fused=True)
    grads = list(torch.autograd.grad(loss, views))
    assert_averaged_over_processes_equal([loss.detach().double()], expected[:1], world, rtol=1e-5, atol=0,
                                         msg="loss")
    for grad, reference in zip(grads, expected[1:]):
        # Each process's rows get the gradient of the sum of the world's losses, whose average
        # (what DDP takes of parameter gradients) is the one-process loss.
        torch.testing.assert_close(grad.double() / world, reference[shard], rtol=1e-4, atol=1e-6)


def run_distributed():
    generator = torch.Generator().manual_seed(7)
    inputs = [torch.randn(2 * PER_PROCESS, 10, generator=generator).float().double() for _ in range(2)]
    views = [tensor.clone().requires_grad_() for tensor in inputs]
    loss = info_nce(*views, temperature=0.2, tiled=False)
    expected = [loss.detach(), *torch.autograd.grad(loss, views)]
    queries = inputs[0].clone().requires_grad_()
    moco = moco_info_nce(queries, inputs[1], temperature=0.2)
    moco_expected = [moco.detach(), *torch.autograd.grad(moco, [queries])]
    with tempfile.TemporaryDirectory() as folder:
        run_in_process_group(Path(folder), distributed_worker, inputs, expected, moco_expected)
    return {"value": 0.0, "grad": 0.0, "grad_rounding_floor": 0.0}


@triton.jit
def tile_rule_kernel(NEEDS_MASK, num_columns, self_offset, batch, num_anchors, BLOCK_M: tl.constexpr,
                     BLOCK_N: tl.constexpr, PAIRED: tl.constexpr, DROP_OTHERS: tl.constexpr):
    row_tile, column_tile = tl.program_id(0), tl.program_id(1)
    needs_mask = fused._tile_needs_mask(row_tile * BLOCK_M, column_tile * BLOCK_N, num_columns, self_offset, batch,
                                        num_anchors, BLOCK_M, BLOCK_N, PAIRED, DROP_OTHERS)
    tl.store(NEEDS_MASK + row_tile * tl.num_programs(1) + column_tile, needs_mask.to(tl.int32))


def masked_entries(num_anchors, num_columns, self_offset, batch, paired, drop_others):
    """Brute force: which (anchor, column) entries are dropped, positive or past the last column,
    as fused._mask_tile defines them, for every anchor that exists and columns up to a tile past
    the end."""
    anchors = torch.arange(num_anchors)[:, None]
    columns = torch.arange(num_columns + 64)[None, :]
    relative = columns - self_offset - anchors
    in_block = (columns >= self_offset) & (columns < self_offset + num_anchors)
    if paired:
        special = (relative == 0) | (in_block & drop_others)
    else:
        special = in_block & (relative % batch == 0)
    return special | (columns >= num_columns)


def run_tile_rule():
    """The kernels skip the masks on tiles fused._tile_needs_mask calls plain: it must never call a
    tile plain that holds a dropped, positive or out-of-range entry (checked against brute force
    for InfoNCE on one or several processes, with a queue, CLIP, MoCo v2), and it should mask few
    tiles where the batch is wide. Reports the largest share of tiles masked in the wide case."""
    block = 64
    layouts = [  # (anchors, columns, self_offset, batch, paired, drop_others)
        (2 * 300, 2 * 300, 0, 300, False, False), (3 * 70, 3 * 70 + 50, 0, 70, False, False),
        (2 * 100, 4 * 200, 2 * 200, 100, False, False), (2 * 40, 3 * 80, 80, 40, False, False),
        (130, 130, 0, 130, True, False), (50, 3 * 50, 100, 50, True, False), (30, 100, 0, 30, True, True),
        (2 * 2048, 2 * 2048, 0, 2048, False, False),
    ]
    wide_share = 0.0
    for num_anchors, num_columns, self_offset, batch, paired, drop_others in layouts:
        row_tiles, column_tiles = triton.cdiv(num_anchors, block), triton.cdiv(num_columns, block)
        needs_mask = torch.zeros(row_tiles, column_tiles, dtype=torch.int32)
        tile_rule_kernel[(row_tiles, column_tiles)](needs_mask, num_columns, self_offset, batch, num_anchors,
                                                    BLOCK_M=block, BLOCK_N=block, PAIRED=paired,
                                                    DROP_OTHERS=drop_others)
        special = masked_entries(num_anchors, num_columns, self_offset, batch, paired, drop_others)
        for i in range(row_tiles):
            for j in range(column_tiles):
                tile = special[i * block:(i + 1) * block, j * block:(j + 1) * block]
                assert needs_mask[i, j] or not tile.any(), (num_anchors, num_columns, self_offset, batch, i, j)
        if num_anchors == 2 * 2048:
            wide_share = needs_mask.float().mean().item()
    return {"value": 0.0, "grad": 0.0, "grad_rounding_floor": 0.0, "wide_masked_share": wide_share}


def run_first_call_check():
    """The automatic choice's check, on the real kernels: it agrees (values and gradients) and
    warns of nothing."""
    generator = torch.Generator().manual_seed(11)
    views = [torch.randn(20, 16, generator=generator).requires_grad_() for _ in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = fused.checked_once("info_nce", views[0], None, lambda: info_nce(*views, fused=True),
                                  lambda: info_nce(*views, fused=False), inputs=tuple(views))
        loss.backward()
    assert fused._checked[("info_nce", "cpu", torch.float32)] is True
    return {"value": 0.0, "grad": 0.0, "grad_rounding_floor": 0.0}


def run_tf32_case():
    """A float32 case with TF32 products asked for, as torch.set_float32_matmul_precision does."""
    torch.set_float32_matmul_precision("high")
    try:
        assert fused._dot_mode(torch.zeros(1, 1)) == "tf32"
        cases = [run_case(2, 30, 20, 0, 0.1, "cosine", torch.float32),
                 run_paired_case("siglip", 37, 0, 20, torch.float32)]
        return {key: max(case[key] for case in cases) for key in cases[0]}
    finally:
        torch.set_float32_matmul_precision("highest")


if __name__ == "__main__":
    report = {name: run_case(*case) for name, case in CASES.items()}
    report["float32, TF32 products"] = run_tf32_case()
    report.update({name: run_paired_case(*case) for name, case in PAIRED_CASES.items()})
    report["two processes, gathered"] = run_distributed()
    report["first-call check"] = run_first_call_check()
    report["tile rule"] = run_tile_rule()
    print(json.dumps(report))
