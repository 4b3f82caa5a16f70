"""Content digests (``algorithm:hex``) as defined by the OCI image spec."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Protocol

from bundler.errors import ReferenceFormatError

# Algorithms we can verify, with the exact hex length each produces. A digest in any other
# algorithm is refused: content we cannot hash is content we cannot trust.
_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)\Z", re.ASCII)


class Hasher(Protocol):
    """The part of a ``hashlib`` hash object bundler uses to hash content as it streams."""

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        """Feed more bytes into the hash."""

    def hexdigest(self) -> str:
        """The lowercase hex digest of every byte fed so far."""


@dataclass(frozen=True, order=True)
class Digest:
    """An ``algorithm:hex`` content digest; only sha256 and sha512 are accepted."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse ``algorithm:hex``; ReferenceFormatError on another algorithm or hex length."""
        match = _DIGEST_RE.match(text)
        if not match:
            raise ReferenceFormatError(f"not a digest: {text!r}")
        algorithm, hexpart = match.groups()
        expected = _HEX_LENGTHS.get(algorithm)
        if expected is None:
            raise ReferenceFormatError(f"unsupported digest algorithm {algorithm!r} in {text!r}")
        if len(hexpart) != expected or not re.fullmatch(r"[0-9a-f]+", hexpart, re.ASCII):
            raise ReferenceFormatError(
                f"malformed {algorithm} digest {text!r}: need {expected} lowercase hex characters"
            )
        return cls(algorithm, hexpart)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        """The digest of ``data`` (sha256 unless ``algorithm`` names another hashlib algorithm)."""
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> Hasher:
        """A fresh hash object of this digest's algorithm."""
        return hashlib.new(self.algorithm)

    def matches(self, data: bytes) -> bool:
        """True when ``data`` hashes, in this digest's algorithm, to exactly this digest."""
        return hashlib.new(self.algorithm, data).hexdigest() == self.hex

    def tag_form(self) -> str:
        """``sha256-<hex>``: the form used by the referrers tag schema and cosign tags."""
        return f"{self.algorithm}-{self.hex}"

    def short(self) -> str:
        """``algorithm:`` and the first 12 hex digits, for messages and progress lines."""
        return f"{self.algorithm}:{self.hex[:12]}"

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"
