"""The fused Triton kernels (contrastkit.losses.fused) against the float64 torch losses: InfoNCE,
CLIP (both directions, the learnable scale's gradient) and MoCo (v3 in-batch keys, v2's queue).

The kernels run under Triton's interpreter on the CPU, which must be on before triton is imported
(other tests import it first, through torch.compile): fused_kernel_cases.py runs every case in a
process started with TRITON_INTERPRET=1 and reports relative errors, checked here.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from contrastkit.errors import ConfigError
from contrastkit.losses import fused, info_nce

CASES_SCRIPT = Path(__file__).with_name("fused_kernel_cases.py")


@pytest.fixture(scope="module")
def report():
    if importlib.util.find_spec("triton") is None:
        pytest.skip("Triton is not installed (pip install triton)")
    src = str(Path(__import__("contrastkit").__file__).resolve().parents[1])
    env = {**os.environ, "TRITON_INTERPRET": "1",
           "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, str(CASES_SCRIPT)], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", ["two views, uneven tile and dim", "three views, cosine", "four views and a queue",
                                  "several tiles each way", "tiles without positives",
                                  "tiles without positives, a queue", "clip, uneven", "clip, several tiles", "moco v3",
                                  "moco v2 with a queue"])
def test_float32_values_and_gradients_match_float64(report, case):
    assert report[case]["value"] <= 1e-5 and report[case]["grad"] <= 1e-5, report[case]


@pytest.mark.parametrize("case", ["bfloat16", "bfloat16, tiles without positives", "float16", "clip, bfloat16",
                                  "siglip, bfloat16"])
def test_16_bit_inputs_lose_no_more_than_their_own_rounding(report, case):
    # Products are exact and sums float32, so the loss is as exact as for float32 inputs. The
    # gradients come back in the inputs' dtype, whose rounding alone (the floor) dominates, twice
    # for anchors that are also columns; the backward's probabilities are rounded to that dtype
    # once more before their tensor-core products, to nearest, so the errors add as independent
    # roundings do, not in line: 3 floors bound them.
    errors = report[case]
    assert errors["value"] <= 1e-3
    assert errors["grad"] <= 3 * errors["grad_rounding_floor"], errors


@pytest.mark.parametrize("case", ["bfloat16", "bfloat16, tiles without positives", "float16", "clip, bfloat16",
                                  "siglip, bfloat16"])
def test_16_bit_gradients_are_no_worse_than_the_textbook_loss_in_that_dtype(report, case):
    # The same inputs through the loss as usually written in torch in the 16-bit dtype (logits and
    # softmax in it), both against float64.
    assert report[case]["grad"] <= report[case]["textbook_grad"], report[case]


def test_tf32_products_run_through_every_kernel(report):
    # The interpreter multiplies in float32 whatever the precision asked, so this checks that the
    # TF32 variant of each kernel compiles and computes the loss; on a GPU TF32 keeps 10 bits.
    assert report["float32, TF32 products"]["value"] <= 1e-5 and report["float32, TF32 products"]["grad"] <= 1e-5


def test_gathered_across_two_processes_equals_one_process(report):
    assert "two processes, gathered" in report  # the case raises in its workers on a mismatch


def test_tiles_called_plain_hold_no_dropped_positive_or_missing_column(report):
    # The case raises if a tile the kernels leave unmasked holds one; where the batch spans many
    # tiles (2 x 2,048 rows, 64 x 64 tiles), only the tiles on the diagonals are masked.
    assert report["tile rule"]["wide_masked_share"] <= 0.05, report["tile rule"]


def test_the_first_call_check_passes_the_real_kernels(report):
    assert "first-call check" in report  # the case raises on a warning or a fallback


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="checks the refusal without the interpreter")
def test_fused_on_a_cpu_without_the_interpreter_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="TRITON_INTERPRET=1.*fused=False"):
        info_nce(torch.randn(4, 8), torch.randn(4, 8), fused=True)


def test_the_automatic_choice_stays_on_torch_off_cuda():
    assert not fused.use_fused(None, torch.randn(4, 8), 64)
    assert fused.use_fused(True, torch.randn(4, 8), 64) and not fused.use_fused(False, torch.randn(4, 8), 64)


def test_the_automatic_choice_takes_the_kernels_where_measured_faster_or_where_the_plain_loss_would_not_fit(
        monkeypatch):
    # A stand-in GPU with 5 GiB free: the plain loss takes 20 bytes a logit, up to 80% of it.
    monkeypatch.setattr(fused, "_automatic_choices", {})
    monkeypatch.setattr(fused, "kernels_apply", lambda rows: True)
    monkeypatch.setattr(fused, "free_gpu_bytes", lambda device: 5 * 2**30)
    rows = torch.randn(4, 8)
    fits = int(0.8 * 5 * 2**30 / fused.TORCH_BYTES_PER_LOGIT)
    assert fits < fused.KERNELS_MEASURED_FASTER_FROM
    assert not fused.use_fused(None, rows, fits) and fused.use_fused(None, rows, fits + 1)
    assert not fused.use_fused(False, rows, 10 * fits)  # a choice given is kept
    # 16-bit rows take the kernels from the size they were measured faster at, memory or not.
    monkeypatch.setattr(fused, "free_gpu_bytes", lambda device: 1000 * 2**30)
    small, measured = fused.KERNELS_MEASURED_FASTER_FROM - 1, fused.KERNELS_MEASURED_FASTER_FROM
    assert not fused.use_fused(None, rows.bfloat16(), small) and fused.use_fused(None, rows.bfloat16(), measured)
    assert not fused.use_fused(None, rows, measured)  # float32 rows: not measured faster
    # Made once per size: the memory of a later moment does not move a run to the other path.
    monkeypatch.setattr(fused, "free_gpu_bytes", lambda device: 1)
    assert not fused.use_fused(None, rows, fits) and fused.use_fused(None, rows, fits + 1)
    monkeypatch.setattr(fused, "kernels_apply", lambda rows: False)
    assert not fused.use_fused(None, rows.bfloat16(), 10 * measured)  # off CUDA, or inside torch.compile


def test_the_automatic_choice_asks_the_driver_nothing_for_small_losses(monkeypatch):
    # MoCo v3 at batch 512 (512^2 logits, twice a step), MoCo v2 while its queue fills (a new size
    # every step): the plain loss, and not one free-memory query (a host-blocking driver call).
    monkeypatch.setattr(fused, "_automatic_choices", {})
    monkeypatch.setattr(fused, "kernels_apply", lambda rows: True)
    queries = []
    monkeypatch.setattr(fused, "free_gpu_bytes", lambda device: queries.append(device) or 1)
    rows = torch.randn(4, 8).bfloat16()
    for num_logits in (512 ** 2, 336 ** 2, *(512 * (512 + filled) for filled in range(512, 65537, 512))):
        assert not fused.use_fused(None, rows, num_logits)
    assert queries == [] and fused._automatic_choices == {}
    assert fused.QUERY_FREE_MEMORY_FROM * fused.TORCH_BYTES_PER_LOGIT <= 2**30
    assert fused.QUERY_FREE_MEMORY_FROM < fused.KERNELS_MEASURED_FASTER_FROM
    # From that size on the rule asks, once per size, as before.
    assert fused.use_fused(None, rows, fused.QUERY_FREE_MEMORY_FROM) and len(queries) == 1


def test_float32_rows_take_the_products_torch_matmuls_take():
    rows = torch.randn(4, 8)
    assert fused._dot_mode(rows) == "ieee" and fused._first_call_tolerance(rows) == 1e-4
    torch.set_float32_matmul_precision("high")
    try:
        assert fused._dot_mode(rows) == "tf32" and fused._first_call_tolerance(rows) == 2e-2
    finally:
        torch.set_float32_matmul_precision("highest")
    # bfloat16 under the interpreter: float32 products of the bfloat16 values, exact, as on a GPU.
    assert fused._dot_mode(rows.bfloat16()) == "ieee" and fused._dot_mode(rows.half()) == "native"


class Calls:
    def __init__(self, fused_value, reference_value=1.0):
        self.fused_value, self.reference_value, self.fused, self.reference = fused_value, reference_value, 0, 0

    def run_fused(self):
        self.fused += 1
        if isinstance(self.fused_value, Exception):
            raise self.fused_value
        return torch.tensor(self.fused_value)

    def run_reference(self):
        self.reference += 1
        return torch.tensor(self.reference_value)


@pytest.fixture
def fresh_checks(monkeypatch):
    monkeypatch.setattr(fused, "_checked", {})


def test_an_automatic_first_call_that_agrees_keeps_the_kernels_unchecked_after(fresh_checks):
    rows, calls = torch.zeros(2, 2), Calls(1.0 + 1e-6)
    for _ in range(3):
        assert fused.checked_once("loss", rows, None, calls.run_fused, calls.run_reference).item() == \
            pytest.approx(1.0 + 1e-6)
    assert (calls.fused, calls.reference) == (3, 1)  # the torch loss ran once, beside the first call


def test_an_automatic_first_call_with_wrong_gradients_falls_back(fresh_checks):
    weight = torch.ones(3, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="differs from the torch loss"):
        # Equal values (3) at weight = 1, gradients 2 against 1.
        value = fused.checked_once("loss", torch.zeros(2, 2), None, lambda: weight.pow(2).sum(),
                                   lambda: weight.sum(), inputs=(weight,))
    value.backward()
    assert weight.grad.tolist() == [1.0, 1.0, 1.0]  # the torch loss's


@pytest.mark.parametrize("fused_value", [1.1, float("nan"), RuntimeError("PTX not supported")])
def test_an_automatic_first_call_that_disagrees_or_fails_falls_back_for_good(fresh_checks, fused_value):
    rows, calls = torch.zeros(2, 2), Calls(fused_value)
    with pytest.warns(RuntimeWarning, match="fused loss kernel was not used.*torch loss runs instead"):
        assert fused.checked_once("loss", rows, None, calls.run_fused, calls.run_reference).item() == 1.0
    assert fused.checked_once("loss", rows, None, calls.run_fused, calls.run_reference).item() == 1.0
    assert calls.fused == 1


def test_a_forced_choice_is_not_checked(fresh_checks):
    rows, calls = torch.zeros(2, 2), Calls(5.0)
    assert fused.checked_once("loss", rows, True, calls.run_fused, calls.run_reference).item() == 5.0
    assert calls.reference == 0


def test_float64_rows_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match="float64 path is the reference"):
        info_nce(torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64), fused=True)
