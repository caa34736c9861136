"""Output files and folders: writes that appear only when complete, and one run at a time per output folder."""

from __future__ import annotations

import datetime
import errno
import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pathoseg.errors import PathosegError

LOCK_NAME = ".pathoseg.lock"
OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)


class OutputError(PathosegError):
    """An output folder that cannot be written: not writable, full, or in use by another run."""


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary sibling path; renames it to ``path`` only if the block finishes (else deletes it)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.partial")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def prepare_output(out_dir: str | Path) -> Path:
    """Create ``out_dir`` and check it is writable."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise OutputError(f"{out_dir}: output folder is not writable ({error.strerror or error})") from None
    return out_dir


@contextmanager
def output_lock(out_dir: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out_dir`` while the block runs; OutputError at once if another run holds it.

    An ``flock`` on ``out_dir/.pathoseg.lock``: the kernel drops it when its holder exits, killed or not, so a
    crashed run never leaves the folder locked. The file names the holder for the refusal message.
    """
    path = Path(out_dir) / LOCK_NAME
    handle = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise OutputError(
            f"{out_dir}: another pathoseg run is writing here ({holder}); wait for it to finish or "
            "choose another output folder"
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {started}")
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


class DiskFullError(OutputError):
    """The disk holding an output folder filled up (or its quota ran out) during a run."""


@contextmanager
def full_disk_reported(out_dir: str | Path) -> Iterator[None]:
    """Turn a write that fails for want of space or quota inside the block into a DiskFullError naming ``out_dir``."""
    try:
        yield
    except OSError as error:
        if error.errno not in OUT_OF_SPACE:
            raise
        raise DiskFullError(
            f"{out_dir}: no space left on the disk ({error.strerror}); free some and rerun the same "
            "command (what was finished is kept, earlier outputs are untouched)"
        ) from None
