"""One writer per run folder: a second `invoke train` on the same run stops at once.

The lock is an advisory `flock` on WORKDIR/<task>/<model>/.lock, so the kernel releases it
when its process dies, even by kill -9 or power loss; the file also names its holder, so a
second command can say who holds the run, and a new run can say whose lock it took over.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

LOCK_FILE = ".lock"


class RunLocked(RuntimeError):
    """Another live process is writing this run folder."""


@contextlib.contextmanager
def run_lock(directory: Path, log: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the run folder's lock for the duration of the block; RunLocked if it is held."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd) or "another process"
            raise RunLocked(f"{directory} is in use by {holder}; wait for it to finish or "
                            "stop it first (two runs on one folder would overwrite each other)"
                            ) from None
        previous = _read(fd)
        if previous:  # a holder that never released it: killed, or the machine went down
            log(f"taking over the lock of {directory} from {previous}, which is no longer "
                "running")
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        _write(fd, f"process {os.getpid()} on {socket.gethostname()} (started {started})")
        try:
            yield
        finally:
            _write(fd, "")
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode(errors="replace").strip()


def _write(fd: int, text: str) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, text.encode())
    os.fsync(fd)
