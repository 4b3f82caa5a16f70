"""Writing a small file so that it is either wholly there or not at all."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from bundler.adapters.fsafe import create_temp


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
