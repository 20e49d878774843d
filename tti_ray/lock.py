"""An exclusive lock on an experiment or run directory, held for the whole command.

``fcntl.flock`` on ``DIR/.tti_ray.lock``: the kernel releases it when the process ends in any
way (exit, exception, SIGKILL), so a crashed command never leaves a directory locked. The file
also holds ``pid host start-time`` of the holder, so a refusal can say who holds it and a lock
file left by a process that died without releasing it (``stale``) can be named when it is taken
over. A clean release empties the file.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from tti_ray.cli import UserError

LOCK_NAME = ".tti_ray.lock"


class LockedError(UserError):
    """Another live process holds the directory (one line, names the holder)."""


class DirLock:
    """``with DirLock(dir, flag="--out"):`` - refuse (``LockedError``) if another process holds
    ``dir``; ``stale`` is the holder a dead process left in the file (``"pid 12 on host"``),
    if any."""

    def __init__(self, directory: Path, *, flag: str = "--out") -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.flag = flag
        self.fd: int | None = None
        self.stale: str | None = None

    def acquire(self) -> DirLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited (PEP 446)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise LockedError(
                f"{self.flag}: {self.directory} is in use by another tti_ray process "
                f"({holder or 'holder unknown'}); wait for it to end or choose another {self.flag}"
            ) from None
        previous = _holder(fd)
        if previous:  # the file was not emptied by a clean release: its writer died
            self.stale = previous
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                      f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode(), 0)
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        return ""
