"""Files on the local disk: small files written wholly or not at all; room for large ones."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from bundler.adapters.fsafe import create_temp
from bundler.errors import TransportError
from bundler.model.text import human_bytes


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically: a reader sees the old file or the new, never half.

    ``data`` goes to a temporary file beside ``path`` (created 0600 with ``O_EXCL|O_NOFOLLOW``,
    see :func:`~bundler.adapters.fsafe.create_temp`), which is
    fsynced, given ``mode`` through its descriptor, and renamed over ``path``. A link at ``path``
    is replaced by the file, never written through.
    """
    fd, tmp = create_temp(path.parent, f".{path.name}.", ".partial")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def require_free_space(directory: Path, needed: int, what: str) -> int:
    """The bytes free for this user in ``directory``'s filesystem, if at least ``needed``.

    Else a TransportError naming how much ``what`` needs and how much is free, before anything
    is written (the disk is what failed: freeing space and a re-run help).
    """
    try:
        stat = os.statvfs(directory)
    except OSError as exc:
        raise TransportError(f"cannot check free space in {directory}: {exc.strerror}") from None
    free = stat.f_bavail * stat.f_frsize
    if free < needed:
        raise TransportError(
            f"not enough free space in {directory}: {what} needs up to {human_bytes(needed)}, "
            f"{human_bytes(free)} are free; free some space, write elsewhere, or split it "
            "with --max-volume-size onto several media"
        )
    return free
