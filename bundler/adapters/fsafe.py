"""Opening files on a medium someone else may have prepared: no links followed, no FIFOs.

Whoever carries the removable medium can plant anything where bundler reads or writes: a
symbolic link named like the file bundler is about to create (so the write lands elsewhere), a
FIFO where an archive or ``index.json`` should be (so a read blocks for ever), ``/dev/zero`` as a
key path (so a read never ends). These helpers are the only way the adapters open such files:

- :func:`create_new` and :func:`create_temp` make a new file with ``O_CREAT|O_EXCL|O_NOFOLLOW``
  (a link or anything else already under the name is an error, never followed); inside a
  layout, :func:`real_directory` first checks that its directories are not links. Modes are
  set with ``fchmod`` on the open descriptor, never through a path.
- :func:`open_regular` opens for reading with ``O_NOFOLLOW|O_NONBLOCK`` (a FIFO does not block
  the open), checks with ``fstat`` that it is a regular file, then clears ``O_NONBLOCK``;
  :func:`read_regular` reads one with a size bound.
- :class:`DestinationLock` is the exclusive ``flock`` a writer holds on its destination for the
  whole write, on a lock file opened the same way.

The checks are made on the descriptor that is then used, so what was checked is what is read or
written. Directory components above the last one are followed (a user may keep layouts under a
linked directory); the layout's own directories are checked with :func:`real_directory`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path

from bundler.errors import TransportError, UnsafeArchiveError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

# How long a second writer waits for the first to finish with the same destination before it
# gives up. Long enough for a large export to finish; tests set it to 0.
LOCK_WAIT_SECONDS = 600.0
_LOCK_POLL_SECONDS = 0.1


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def real_directory(path: Path, what: str = "directory") -> bool:
    """True when ``path`` is a directory itself (not a link to one); False when it is absent.

    UnsafeArchiveError when something else (a link, a file, a FIFO) is there.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeArchiveError(
            f"{what} {path} is {_kind(info.st_mode)}, not a directory; refusing to write through "
            "it (remove it, or choose another destination)"
        )
    return True


def create_new(path: Path, mode: int = 0o600) -> int:
    """A new file at ``path``, open for writing, with exactly ``mode``; never follows a link.

    FileExistsError when anything (a file, a link, dangling or not) is already there.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600)
    try:
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_temp(directory: Path, prefix: str, suffix: str = "") -> tuple[int, Path]:
    """A new, uniquely named file ``directory/PREFIX<random>SUFFIX`` (0600), open for writing.

    Like :func:`tempfile.mkstemp`, created with ``O_EXCL|O_NOFOLLOW``. ``directory`` is used as
    given (it may be a link the user chose); callers writing inside a layout check its own
    directories with :func:`real_directory` first.
    """
    for _ in range(100):
        path = directory / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            return create_new(path), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(directory))


def open_regular(
    path: Path, what: str = "file", *, write: bool = False, follow: bool = False
) -> int:
    """A descriptor of the regular file at ``path``; the open never blocks (a FIFO is refused).

    FileNotFoundError when nothing is there; UnsafeArchiveError for a FIFO, a device, a
    directory, and (unless ``follow``, for a path the user named) a symbolic link. ``write``
    opens it read-write (it is not created).
    """
    flags = (os.O_RDWR if write else os.O_RDONLY) | os.O_NONBLOCK | _CLOEXEC
    if not follow:
        flags |= _NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeArchiveError(
                f"{what} {path} is a symbolic link; refusing to follow it (replace it with the "
                "file itself)"
            ) from None
        if exc.errno == errno.EISDIR:
            raise UnsafeArchiveError(f"{what} {path} is a directory, not a file") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeArchiveError(
                f"{what} {path} is {_kind(info.st_mode)}, not a regular file; refusing to read it"
            )
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: Path, limit: int, what: str = "file", *, follow: bool = False) -> bytes:
    """Up to ``limit + 1`` bytes of the regular file at ``path`` (more than ``limit``: too big).

    Errors as :func:`open_regular`; reading stops one byte past the bound, so a caller can tell
    an oversized file from one that fits without reading it all.
    """
    fd = open_regular(path, what, follow=follow)
    try:
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def remove_stale(directory: Path, matches: Callable[[str], bool]) -> list[str]:
    """Remove the regular files of ``directory`` whose names ``matches``; returns their names.

    Links, directories and anything else are left alone, as is a directory that is itself a
    link; files that vanish meanwhile are skipped. For a writer's own leftover temporary files,
    called with the destination's lock held.
    """
    removed: list[str] = []
    try:
        if not real_directory(directory):
            return removed
        entries = list(os.scandir(directory))
    except (OSError, UnsafeArchiveError):
        return removed
    for entry in entries:
        with contextlib.suppress(OSError):
            if matches(entry.name) and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(entry.name)
    return removed


class DestinationLock:
    """The exclusive lock a writer holds on one destination (an archive, a layout) while it writes.

    ``acquire`` opens (creating if need be) the lock file ``path`` without following a link and
    takes ``flock(LOCK_EX)`` on it; a second writer, in this or another process, waits up to
    :data:`LOCK_WAIT_SECONDS` and then fails with a TransportError saying that another bundler
    is writing ``dest``. Acquiring is counted, so a caller may hold the lock around a target's
    whole ``begin``..``commit`` (and the reads before it) with ``with target.write_lock:``; the
    lock goes when the last holder releases it. ``prepare`` runs before the lock file is opened
    (a layout creates its directory there). The last holder removes the lock file while it still
    holds the lock; a waiter that then gets the lock on the removed file sees that it is no longer
    the file at ``path`` and locks the new one, so no two writers ever hold "the" lock at once and
    no lock file is left behind.
    """

    def __init__(self, path: Path, dest: str, prepare: Callable[[], None] | None = None) -> None:
        self.path = path
        self.dest = dest
        self._prepare = prepare
        self._fd = -1
        self._count = 0

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._count > 0

    def acquire(self) -> None:
        """Take the lock (or count one more holder); TransportError after the bounded wait."""
        if self._count:
            self._count += 1
            return
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            if self._prepare is not None:
                self._prepare()
            fd = self._open()
            try:
                self._wait(fd, deadline)
                if self._still_there(fd):
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # the holder before us removed it: lock the file now there
        self._fd = fd
        self._count = 1

    def _still_there(self, fd: int) -> bool:
        try:
            now = os.lstat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | _NOFOLLOW | _CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeArchiveError(
                    f"lock file {self.path} is a symbolic link; refusing to follow it (remove it)"
                ) from None
            raise TransportError(f"cannot create lock file {self.path}: {exc.strerror}") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise UnsafeArchiveError(
                f"lock file {self.path} is {_kind(info.st_mode)}, not a regular file (remove it)"
            )
        return fd

    def _wait(self, fd: int, deadline: float) -> None:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TransportError(
                        f"another bundler is writing {self.dest} (its lock {self.path} is held); "
                        "run again when it has finished"
                    ) from None
            except OSError as exc:
                raise TransportError(f"cannot lock {self.path}: {exc.strerror}") from None
            time.sleep(_LOCK_POLL_SECONDS)

    def release(self) -> None:
        """Drop one holder; the last one unlocks and closes the lock file. Idempotent at zero."""
        if self._count == 0:
            return
        self._count -= 1
        if self._count == 0:
            fd, self._fd = self._fd, -1
            with contextlib.suppress(OSError):
                if self._still_there(fd):
                    os.unlink(self.path)  # under the lock; a waiter then sees it went
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> DestinationLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
