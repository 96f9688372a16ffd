"""Writing an output file safely: one writer at a time, through symlinks, never replacing a
special file, and no ``*.partial`` file left behind when a write fails.

- :func:`target`: where a path really writes (a symlink resolved; a device, FIFO or
  ``/dev/stdout`` flagged as a stream, written in place and never replaced or read back).
- :class:`OutputLock`: an exclusive ``fcntl`` lock on ``<file>.lock`` beside the file, held for a
  whole run; a second writer fails at once, naming the holder's pid.
- :func:`write_atomically`: a whole file written to ``<file>.partial`` and moved over the file.
- :func:`write_error`: an ``OSError`` of a write (disk full...) as one that names the file.
"""
from __future__ import annotations

import dataclasses
import fcntl
import os
from pathlib import Path

__all__ = ["Target", "target", "open_stream", "OutputLock", "OutputLockedError", "write_atomically", "write_error"]


@dataclasses.dataclass(frozen=True)
class Target:
    """path: the file written (symlinks resolved); stream: a special file (a terminal, pipe,
    device, ``/dev/stdout``): written in place, never replaced, locked or read back."""

    path: Path
    stream: bool
    fd: int | None = None  # /dev/stdout, /dev/stderr, /dev/fd/N: this process's descriptor N


_STANDARD = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}


def target(path: str | os.PathLike[str]) -> Target:
    """Where writing ``path`` goes. A symlink is written through (its target, resolved), so
    the link stays a link; a special file is a stream."""
    given = Path(path)
    if str(given).startswith(("/dev/", "/proc/")):  # /dev/stdout -> /proc/self/fd/1 -> whatever fd 1 is
        name = str(given)
        fd = _STANDARD.get(name)
        for prefix in ("/dev/fd/", "/proc/self/fd/"):
            if name.startswith(prefix) and name[len(prefix):].isdigit():
                fd = int(name[len(prefix):])
        return Target(given, True, fd)
    resolved = Path(os.path.realpath(given))
    stream = resolved.exists() and not resolved.is_file() and not resolved.is_dir()
    return Target(resolved, stream)


def open_stream(where: Target):  # -> IO[str]
    """A text handle appending to a stream target. A descriptor of this process (``/dev/stdout``)
    is duplicated rather than reopened, so that the rows and what the process prints share one
    file offset (reopening a redirected stdout would write over the printed lines)."""
    if where.fd is not None:
        return open(os.dup(where.fd), "a")  # noqa: SIM115 - the caller closes it
    return open(where.path, "a")  # noqa: SIM115


class OutputLockedError(OSError):
    """Another process holds the output's lock."""


class OutputLock:
    """An exclusive lock on ``<path>.lock`` (``fcntl.flock``, released by the kernel if the
    process dies), taken at once or refused. The lock file holds the holder's pid and is
    removed on :meth:`release`; a lock taken on a lock file that another process removed
    meanwhile is retaken on the new one (otherwise two writers could each hold one)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise OutputLockedError(
                    f"{self.path} is being written by another run (pid {holder}, lock file {self.lock_path}); "
                    "wait for it to finish, or give another output file"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder released and removed it between our open and flock: retry
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd: int | None = fd

    def release(self) -> None:
        """Remove the lock file and release the lock (idempotent)."""
        if self.fd is None:
            return
        try:
            self.lock_path.unlink()
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def write_error(path: str | os.PathLike[str], err: OSError) -> OSError:
    """``err`` (e.g. ENOSPC from a write or flush) as an OSError whose message names ``path``."""
    return OSError(err.errno, f"writing {path} failed: {err.strerror or err}")


def write_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` as the whole content of ``path``: into ``<path>.partial``, synced, then
    moved over ``path`` (a run killed meanwhile leaves the old file or the new one, never half
    of one). A failed write (disk full...) removes the ``.partial`` file and raises an OSError
    naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    try:
        with temporary.open("w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except OSError as err:
        temporary.unlink(missing_ok=True)
        raise write_error(path, err) from err
