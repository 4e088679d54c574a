"""What a run folder guarantees: one writer at a time, nobody else's files overwritten, no torn files.

* A run holds an exclusive lock on ``<run>/.lock`` for its whole life (training, evaluation, plots;
  ``eval``, ``plot`` and ``embed`` take it too), so a second process aimed at the same folder is
  refused instead of interleaving its logs or reading a half-trained checkpoint. The
  operating system drops the lock when its process dies, however it dies, so the lock of a killed
  run is taken over by the next one without asking; the file's text only names the holder.
* ``.lock`` (or, for folders of older versions, ``checkpoints/last.pt``) marks a folder as a run:
  a non-empty folder without it belongs to someone else and is never written into.
* Files are replaced atomically (:mod:`contrastkit._atomic`); the temporary files a kill
  leaves behind are deleted when the lock is next taken.
* A folder the lock made for a run that was then refused (before writing anything) is removed
  again, with the parents made for it, so a typo leaves no empty run folder behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
from pathlib import Path
from typing import IO, Iterator

from contrastkit._atomic import remove_orphaned_temporaries
from contrastkit.errors import ContrastkitError

if os.name == "nt":
    import msvcrt
else:
    import fcntl

LOCK_NAME = ".lock"
CHECKPOINT = Path("checkpoints") / "last.pt"
# Everything a run writes into its folder; starting a run over removes exactly these.
RUN_ENTRIES = ("config.yaml", "metrics.jsonl", "summary.json", "tensorboard", "plots", "checkpoints",
               "report.html")


def is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` was made by ``contrastkit train``."""
    return (folder / LOCK_NAME).is_file() or (folder / CHECKPOINT).is_file()


def check_usable(folder: Path) -> None:
    """Refuse an ``--out`` that is a file, or a folder holding files that are not a run's."""
    if folder.exists() and not folder.is_dir():
        raise ContrastkitError(f"--out {folder} is a file, not a folder; choose a new folder for the run.")
    if folder.is_dir() and not is_run_folder(folder):
        names = sorted(entry.name for entry in folder.iterdir())
        if names:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            raise ContrastkitError(f"--out {folder} is not empty ({shown}) and is not a contrastkit run folder; "
                                   "choose a new or empty folder, so that none of your files is overwritten.")


def _try_lock(file: IO[str]) -> bool:
    try:
        if os.name == "nt":
            file.seek(0)
            msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _unlock(file: IO[str]) -> None:
    if os.name == "nt":
        file.seek(0)
        msvcrt.locking(file.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        fcntl.flock(file.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def locked(folder: str | os.PathLike, action: str = "training") -> Iterator[Path]:
    """Hold the run folder's lock (creating the folder) for the ``with`` block.

    Refuses, before anything is written, a folder that is not a run's, and a run another process
    holds. Inside, the temporary files of interrupted writes are gone.
    """
    folder = Path(folder)
    check_usable(folder)
    # The folder and its parents that this call makes: removed again if the run is refused.
    created = [place for place in (folder, *folder.parents) if not place.exists()]
    lock_path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock_path.touch(exist_ok=True)
    except OSError as error:
        raise ContrastkitError(f"cannot write into {folder} ({error.strerror}); choose a folder you can write to "
                               "(--out DIR).") from error
    with open(lock_path, "r+") as file:
        if not _try_lock(file):
            holder = file.read().strip() or "another process"
            other_folder = " or choose another --out folder" if action == "training" else ""
            raise ContrastkitError(f"{folder} is in use by another contrastkit run ({holder}); wait for it to "
                                   f"finish{other_folder}.")
        try:
            file.seek(0)
            file.truncate()
            file.write(f"pid {os.getpid()} on {socket.gethostname()}, {action} since "
                       f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            file.flush()
            for place in (folder, folder / "checkpoints"):
                if place.is_dir():
                    remove_orphaned_temporaries(place)
            yield folder
        except BaseException:
            if created:
                _remove_if_unused(created)
            raise
        finally:
            file.seek(0)
            file.truncate()
            _unlock(file)


def _remove_if_unused(created: list[Path]) -> None:
    """Remove the folders a refused run made (deepest first, ``created[0]`` the run folder) while
    they hold nothing but its lock, so that a typo leaves no empty run folder behind."""
    folder = created[0]
    if [entry.name for entry in folder.iterdir()] != [LOCK_NAME]:
        return
    (folder / LOCK_NAME).unlink()
    for place in created:
        if any(place.iterdir()):
            break
        place.rmdir()


def start_over(folder: Path) -> None:
    """Remove what an earlier run wrote into ``folder`` (hold its lock), keeping anything else."""
    for name in RUN_ENTRIES:
        entry = folder / name
        if entry.is_dir():
            shutil.rmtree(entry)
        elif entry.exists():
            entry.unlink()
