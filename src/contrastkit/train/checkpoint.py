"""Atomic checkpoint files: a crash mid-write never leaves a truncated checkpoint behind.

A write goes to a hidden temporary file beside its target (``.NAME.XXXX.tmp``), is flushed to disk,
then renamed over the target. A process killed mid-write leaves that temporary file behind;
:func:`remove_orphaned_temporaries` clears them when the folder is next used.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

from contrastkit.errors import ContrastkitError


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """torch.save ``obj`` to ``path`` atomically."""
    write_atomic(path, lambda file: torch.save(obj, file))


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> None:
    """Call ``write`` on a temporary file in the same folder, fsync, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); the result should be like any file the user writes.
        os.chmod(temporary, 0o666 & ~_umask())
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def remove_orphaned_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that interrupted :func:`write_atomic` calls left in ``folder``;
    only call it while no write is under way there (the run folder's lock is held)."""
    removed = []
    for temporary in Path(folder).glob(".*.*.tmp"):
        if temporary.is_file():
            temporary.unlink()
            removed.append(temporary)
    return removed


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ContrastkitError(f"no checkpoint at {path}; train first (contrastkit train --out {path.parent.parent}).")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise ContrastkitError(f"checkpoint {path} cannot be read ({error}); it may come from another "
                               "program or an older contrastkit.") from error
