"""Atomic file writes: a crash mid-write never leaves a truncated file behind.

A write goes to a hidden temporary file beside its target (``.NAME.XXXX.tmp``), is flushed to disk,
then renamed over the target. A process killed mid-write leaves that temporary file behind;
:func:`remove_orphaned_temporaries` clears them when the folder is next used. A write that fails
(a full disk, a file-size limit) raises the operating system's error with the target's path and
leaves the old file as it was. A folder of several files (an exported model) is filled aside and
renamed into place alike (:func:`write_folder_atomic`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


class _RecordingWriter:
    """A file's ``write`` and ``flush``, remembering the OS error of a call that failed: torch.save
    reports a failed write as a RuntimeError of its own ("unexpected pos"), which hides a full disk."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        try:
            self.file.flush()
        except OSError as error:
            self.error = error
            raise


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> None:
    """Call ``write`` on a temporary file in the same folder, fsync, then rename it over ``path``.

    Args:
        path: the file to create or replace.
        write: writes the whole content to the binary file object it is given.

    Raises:
        OSError: the write failed (its ``filename`` is ``path``); ``path`` is unchanged.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "notes.txt"
        >>> write_atomic(target, lambda file: file.write(b"kept whole"))
        >>> target.read_text()
        'kept whole'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); the result should be like any file the user writes.
        os.chmod(temporary, 0o666 & ~_umask())
        with os.fdopen(handle, "wb") as file:
            recorder = _RecordingWriter(file)
            try:
                write(recorder)  # type: ignore[arg-type]  # a file object as far as writers go
                recorder.flush()
                os.fsync(file.fileno())
            except (OSError, RuntimeError) as error:
                failed = recorder.error or (error if isinstance(error, OSError) else None)
                if failed is None:
                    raise
                raise OSError(failed.errno, failed.strerror, str(path)) from error
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_folder_atomic(path: str | os.PathLike, fill: Callable[[Path], Any]) -> None:
    """Call ``fill`` on a temporary folder beside ``path``, then rename it to ``path``: a reader sees
    the old folder or the complete new one, never a half-filled one.

    An existing ``path`` is renamed aside first and deleted once the new folder is in place (a
    folder cannot be renamed over a non-empty one), and put back if the second rename fails; a kill
    between the two renames leaves the old folder as ``.NAME.XXXX.old.tmp`` beside it.

    Args:
        path: the folder to create or replace.
        fill: writes the folder's whole content into the (empty) folder it is given.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "model"
        >>> write_folder_atomic(target, lambda folder: (folder / "config.json").write_text("{}"))
        >>> sorted(entry.name for entry in target.iterdir())
        ['config.json']
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        # mkdtemp makes the folder private (0700); the result should be like any folder the user makes.
        os.chmod(staging, 0o777 & ~_umask())
        fill(staging)
        if path.exists():
            old = staging.with_name(staging.name[:-len(".tmp")] + ".old.tmp")
            os.replace(path, old)
            try:
                os.replace(staging, path)
            except BaseException:
                os.replace(old, path)  # the old folder back where it was
                raise
            shutil.rmtree(old)
        else:
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
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
