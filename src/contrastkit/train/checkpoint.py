"""Checkpoint files, written atomically (:mod:`contrastkit._atomic`): a crash mid-write never
leaves a truncated checkpoint behind."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from contrastkit._atomic import write_atomic
from contrastkit.errors import ContrastkitError


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """torch.save ``obj`` to ``path`` atomically."""
    write_atomic(path, lambda file: torch.save(obj, file))


class UnreadableCheckpoint(ContrastkitError):
    """A checkpoint file that exists but cannot be read (truncated, foreign, corrupt)."""


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint at ``path``, loaded with ``weights_only`` (no code runs from the file).

    Args:
        path: a file :func:`save_atomic` wrote.
        map_location: where its tensors are put.

    Raises:
        ContrastkitError: there is no file at ``path``; UnreadableCheckpoint: it cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise ContrastkitError(f"no checkpoint at {path}; train first (contrastkit train --out {path.parent.parent}).")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        # torch's own words are no help here (KeyError: 97, or advice to load without weights_only).
        if not zipfile.is_zipfile(path):
            reason = f"{path.stat().st_size} bytes that are not a PyTorch checkpoint archive"
        else:
            reason = " ".join(f"{type(error).__name__}: {error}".split())[:160]
        raise UnreadableCheckpoint(f"checkpoint {path} cannot be read ({reason}); it is damaged or cut short, or comes "
                                   "from another program.") from error
