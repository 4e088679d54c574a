"""Makes Triton's interpreter usable with NumPy >= 2.4 where the installed Triton predates the fix.

Triton 3.6's interpreter turns a tensor into a loop bound with ``int(handle.data)``, a one-element
array that NumPy 2.4 no longer converts (triton-lang/triton#9171, fixed upstream by #9172 with
``.squeeze()``). Every kernel with a run-time loop bound then fails under ``TRITON_INTERPRET=1``
(seen on the H100 machine: triton 3.6, numpy 2.5). The test workers that interpret kernels call
:func:`patch_loop_bounds` first; with NumPy < 2.4 it changes nothing, and on a Triton with the
fix it sets the conversion Triton already uses.
"""

import numpy as np


def patch_loop_bounds() -> None:
    if np.lib.NumpyVersion(np.__version__) < "2.4.0":
        return  # one-element arrays still convert (with a deprecation warning)
    from triton.runtime import interpreter

    if getattr(interpreter, "_contrastkit_patched", False):
        return
    original = interpreter._patch_lang_tensor

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    interpreter._patch_lang_tensor = patch_lang_tensor
    interpreter._contrastkit_patched = True
