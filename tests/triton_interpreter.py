"""Makes Triton's interpreter usable with NumPy >= 2.4 where the installed Triton predates the fix.

Triton 3.6's interpreter turns a tensor into a loop bound with ``int(handle.data)``, a one-element
array that NumPy 2.4 no longer converts (triton-lang/triton#9171, fixed upstream by #9172 with
``.squeeze()``). Every kernel with a run-time loop bound then fails under ``TRITON_INTERPRET=1``
(seen on the H100 machine: triton 3.6, numpy 2.5). The test workers that interpret kernels call
:func:`patch_loop_bounds` first; it changes nothing where the interpreter already converts.
"""

import numpy as np


def _interpreter_converts_loop_bounds() -> bool:
    try:
        int(np.ones(1, dtype=np.int32))
    except TypeError:
        return False
    return True


def patch_loop_bounds() -> None:
    from triton.runtime import interpreter

    if _interpreter_converts_loop_bounds() or getattr(interpreter, "_contrastkit_patched", False):
        return
    original = interpreter._patch_lang_tensor

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    interpreter._patch_lang_tensor = patch_lang_tensor
    interpreter._contrastkit_patched = True
