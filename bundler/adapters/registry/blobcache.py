"""Where blobs were last seen, per registry, so a copy can mount instead of upload.

A multi-image copy into one registry meets the same base layers again and again in different
repositories. Remembering ``(registry, digest) -> repositories`` lets the target registry link a
blob it already holds (``POST ...?mount=<digest>&from=<repo>``) instead of receiving it again:
what skopeo's blob-info cache does. An entry is only a hint. A stale one costs a refused mount
and a normal upload; content is never taken from the cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import threading
from pathlib import Path

from bundler.model.digest import Digest

MAX_REPOS_PER_BLOB = 4
MAX_BLOBS_PER_HOST = 20_000


def default_cache_path() -> Path:
    """``$XDG_CACHE_HOME/bundler/blob-locations-v1.json`` (``~/.cache`` when XDG is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bundler" / "blob-locations-v1.json"


class BlobLocationCache:
    """Thread-safe ``(registry, digest) -> repositories`` hints, newest first.

    With a ``path`` it starts from that file (a missing or unreadable file counts as empty) and
    ``save`` merges back into it; with None it lives for the run only. At most
    ``MAX_REPOS_PER_BLOB`` repositories per blob and ``MAX_BLOBS_PER_HOST`` blobs per registry are
    kept.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, list[str]]] = {}
        self._dirty = False
        if path is not None:
            with contextlib.suppress(OSError, ValueError):
                loaded = json.loads(path.read_text())
                if isinstance(loaded, dict):
                    self._data = {
                        h: {
                            d: [r for r in repos if isinstance(r, str)]
                            for d, repos in blobs.items()
                            if isinstance(repos, list)
                        }
                        for h, blobs in loaded.items()
                        if isinstance(blobs, dict)
                    }

    def candidates(self, host: str, digest: Digest) -> list[str]:
        """The repositories of ``host`` last seen holding ``digest``, newest first (a copy)."""
        with self._lock:
            return list(self._data.get(host, {}).get(str(digest), []))

    def record(self, host: str, digest: Digest, repo: str) -> None:
        """Note that ``repo`` on ``host`` holds ``digest``; it becomes the first candidate."""
        with self._lock:
            blobs = self._data.setdefault(host, {})
            repos = blobs.setdefault(str(digest), [])
            if repos and repos[0] == repo:
                return
            if repo in repos:
                repos.remove(repo)
            repos.insert(0, repo)
            del repos[MAX_REPOS_PER_BLOB:]
            if len(blobs) > MAX_BLOBS_PER_HOST:
                for stale in list(blobs)[: len(blobs) - MAX_BLOBS_PER_HOST]:
                    del blobs[stale]
            self._dirty = True

    def forget(self, host: str, digest: Digest, repo: str) -> None:
        """Drop ``repo`` as a holder of ``digest`` (a mount from it was refused)."""
        with self._lock:
            repos = self._data.get(host, {}).get(str(digest))
            if repos and repo in repos:
                repos.remove(repo)
                self._dirty = True

    def save(self) -> None:
        """Merge into the file on disk; failures only cost future mounts, so they are quiet."""
        if self.path is None or not self._dirty:
            return
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path.with_suffix(".lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                merged = BlobLocationCache(self.path)
                with self._lock:
                    for host, blobs in self._data.items():
                        for digest, repos in blobs.items():
                            for repo in reversed(repos):
                                merged.record(host, Digest.parse(digest), repo)
                fd, tmp = tempfile.mkstemp(prefix=".blob-locations-", dir=self.path.parent)
                try:
                    with os.fdopen(fd, "w") as out:
                        json.dump(merged._data, out, separators=(",", ":"))
                    os.replace(tmp, self.path)
                except OSError:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    raise
            self._dirty = False
