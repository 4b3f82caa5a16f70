"""Byte streams that check size and digest while they flow.

Every blob bundler moves passes through :class:`VerifiedStream`: it counts and hashes each
chunk, refuses a single byte beyond the declared size, and raises at end of stream when the
digest differs. A consumer that commits only after the stream is exhausted therefore never
commits bad content.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from bundler.errors import DigestMismatchError, SizeMismatchError
from bundler.model.descriptor import Descriptor

CHUNK_SIZE = 1024 * 1024


class VerifiedStream:
    """Iterate chunks of one blob, verifying size and digest on the fly."""

    def __init__(
        self,
        chunks: Iterable[bytes],
        descriptor: Descriptor,
        origin: str,
        on_bytes: Callable[[int], None] | None = None,
        verify_digest: bool = True,
    ) -> None:
        self._chunks = iter(chunks)
        self.descriptor = descriptor
        self.origin = origin
        self._hasher = descriptor.digest.hasher() if verify_digest else None
        self._seen = 0
        self._on_bytes = on_bytes
        self.error: Exception | None = None
        self.finished = False

    def __len__(self) -> int:
        # Lets HTTP clients send a Content-Length instead of chunked transfer encoding.
        return self.descriptor.size

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self._finish()
            raise
        self._seen += len(chunk)
        if self._seen > self.descriptor.size:
            self._fail(
                SizeMismatchError(
                    f"blob {self.descriptor.digest} from {self.origin} is longer than its "
                    f"declared {self.descriptor.size} bytes"
                )
            )
        if self._hasher is not None:
            self._hasher.update(chunk)
        if self._on_bytes is not None:
            self._on_bytes(len(chunk))
        return chunk

    def _fail(self, error: Exception) -> None:
        self.error = error
        raise error

    def _finish(self) -> None:
        if self.finished:
            return
        if self._seen != self.descriptor.size:
            self._fail(
                SizeMismatchError(
                    f"blob {self.descriptor.digest} from {self.origin} is {self._seen} bytes, "
                    f"expected {self.descriptor.size}"
                )
            )
        if self._hasher is not None:
            actual = self._hasher.hexdigest()
            if actual != self.descriptor.digest.hex:
                self._fail(
                    DigestMismatchError(
                        f"blob {self.descriptor.digest} from {self.origin} has digest "
                        f"{self.descriptor.digest.algorithm}:{actual}: content was altered"
                    )
                )
        self.finished = True

    def drain(self) -> None:
        """Consume whatever is left, verifying it."""
        for _ in self:
            pass


def read_exact(chunks: Iterable[bytes], limit: int) -> bytes:
    """Collect a small stream, refusing more than ``limit`` bytes."""
    parts: list[bytes] = []
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise SizeMismatchError(f"content exceeds the {limit}-byte bound")
        parts.append(chunk)
    return b"".join(parts)
