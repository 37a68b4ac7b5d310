"""The marker a writer leaves while it waits for a DuckDB file: ``<file>.write-pending``.

DuckDB lets no process write a file that another reads (docs/engines.md). A headgraph
server keeps its file open between requests, so a writer that finds it held leaves this
marker, and a server that sees it lets go of the file and refuses new requests (503 +
``Retry-After``) until the writer is done (:mod:`headgraph.api.execute`).

The marker must never outlive its writer in effect: a server that trusted a stale one
would answer 503 for ever. A PID alone does not do (a killed writer's PID is reused, and
in a container PID 1 is always alive), so the writer holds a lock on the marker that the
kernel drops when the process ends (:class:`PendingMarker`).
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: markers fall back to PID and start time
    fcntl = None  # type: ignore[assignment]

PENDING_SUFFIX = ".write-pending"


def pending_marker(path: Path) -> Path:
    """The marker a writer waiting for the DuckDB file ``path`` leaves beside it."""
    return path.with_name(path.name + PENDING_SUFFIX)


class PendingMarker:
    """``<file>.write-pending``: a writer is waiting for (or writing) a DuckDB file.

    The writer holds an exclusive lock (``flock``) on the marker for as long as it waits
    and writes, and the kernel drops the lock when the process ends, however it ends. A
    server asks for a shared lock without waiting (:func:`writer_waiting`): refused
    means a live writer waits. So a marker left by a killed writer, or one naming a PID
    that has since been reused by another process (PID 1 in a container), never blocks a
    server. The file holds the writer's PID and its process start time, for people
    (``cat``); nothing reads them. Where ``flock`` does not exist (Windows), a marker
    counts while a process with that PID and that start time lives.
    """

    def __init__(self, path: Path) -> None:
        self.path = pending_marker(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def take(self) -> bool:
        """Leave the marker; False when another writer's marker is already there (that
        one speaks for both)."""
        if self._fd is not None:
            return True
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return False  # a read-only folder: the writer just waits without asking
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                raise OSError("the marker was removed while it was taken")
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {process_start(os.getpid())}\n".encode())
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        """Remove the marker (if it is still this writer's) and drop the lock."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                self.path.unlink()
        except OSError:
            pass
        finally:
            os.close(fd)


def writer_waiting(path: Path) -> bool:
    """Whether a live writer has left its marker beside the DuckDB file ``path``
    (:class:`PendingMarker`); about 10 microseconds."""
    marker = pending_marker(path)
    try:
        fd = os.open(marker, os.O_RDONLY)
    except OSError:
        return False
    try:
        if fcntl is None:
            return _marker_process_lives(os.read(fd, 100))
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def process_start(pid: int) -> str:
    """When process ``pid`` started, as the system counts it (clock ticks since boot on
    Linux), ``""`` when unknown: with the PID it names one process, not a reused PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        pass
    try:
        import psutil

        return f"{psutil.Process(pid).create_time():.3f}"
    except Exception:  # noqa: BLE001 - no psutil, or no such process
        return ""


def _marker_process_lives(content: bytes) -> bool:
    """The fallback without ``flock``: the marker's PID lives and started when it says."""
    try:
        pid_text, _, started = content.decode().strip().partition(" ")
        pid = int(pid_text)
    except ValueError:
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    return not started or process_start(pid) == started
