"""The fused Triton InfoNCE kernels (contrastkit.losses.fused) against the float64 torch loss.

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
from contrastkit.losses import info_nce

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                reason="Triton is not installed (pip install triton)")
CASES_SCRIPT = Path(__file__).with_name("fused_kernel_cases.py")


@pytest.fixture(scope="module")
def report():
    src = str(Path(__import__("contrastkit").__file__).resolve().parents[1])
    env = {**os.environ, "TRITON_INTERPRET": "1",
           "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, str(CASES_SCRIPT)], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", ["two views, uneven tile and dim", "three views, cosine", "four views and a queue",
                                  "several tiles each way"])
def test_float32_values_and_gradients_match_float64(report, case):
    assert report[case]["value"] <= 1e-5 and report[case]["grad"] <= 1e-5, report[case]


@pytest.mark.parametrize("case", ["bfloat16", "float16"])
def test_16_bit_inputs_lose_no_more_than_their_own_rounding(report, case):
    # Products are exact and sums float32, so the loss is as exact as for float32 inputs; the
    # gradients come back in the inputs' dtype, whose rounding alone (the floor) dominates, twice
    # for anchors that are also columns.
    errors = report[case]
    assert errors["value"] <= 1e-3
    assert errors["grad"] <= 3 * errors["grad_rounding_floor"], errors


def test_gathered_across_two_processes_equals_one_process(report):
    assert "two processes, gathered" in report  # the case raises in its workers on a mismatch


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="checks the refusal without the interpreter")
def test_fused_on_a_cpu_without_the_interpreter_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="TRITON_INTERPRET=1.*fused=False"):
        info_nce(torch.randn(4, 8), torch.randn(4, 8), fused=True)


def test_float64_rows_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match="float64 path is the reference"):
        info_nce(torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64), fused=True)
