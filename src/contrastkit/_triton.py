"""Triton where it is installed, for the fused kernels (augmentation, contrastive losses).

Without Triton, ``triton`` and ``tl`` are None and :func:`jit` leaves a kernel a plain function
that nothing calls; the callers fall back to torch ops and say how to install Triton.
"""

from __future__ import annotations

from typing import Any

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None
    tl = None


def jit(fn: Any) -> Any:
    """triton.jit where Triton is installed. Triton picks compiled or interpreted code
    (TRITON_INTERPRET=1) here, at import, as it does for its own library functions (tl.sum,
    tl.cdiv) when it is imported."""
    return fn if triton is None else triton.jit(fn)
