"""VerifiedStream: every blob is counted and hashed while it flows."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bundler.adapters.stream import VerifiedStream, read_exact
from bundler.errors import DigestMismatchError, SizeMismatchError
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest

BLOB = bytes(range(256)) * 64  # 16 KiB
DESC = Descriptor("application/octet-stream", Digest.of(BLOB), len(BLOB))


def _chunks(data: bytes, size: int = 1000) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_exact_size_and_digest_pass() -> None:
    seen: list[int] = []
    stream = VerifiedStream(_chunks(BLOB), DESC, "origin-x", on_bytes=seen.append)
    assert b"".join(stream) == BLOB
    assert stream.finished
    assert stream.error is None
    assert sum(seen) == len(BLOB)
    assert len(stream) == len(BLOB)


def test_empty_blob_passes() -> None:
    desc = Descriptor("application/octet-stream", Digest.of(b""), 0)
    stream = VerifiedStream([], desc, "origin")
    stream.drain()
    assert stream.finished


def test_one_flipped_byte_raises_digest_mismatch_naming_digest_and_origin() -> None:
    tampered = bytearray(BLOB)
    tampered[len(BLOB) // 2] ^= 0x01
    stream = VerifiedStream(_chunks(bytes(tampered)), DESC, "registry.test/app")
    with pytest.raises(DigestMismatchError) as info:
        stream.drain()
    message = str(info.value)
    assert str(DESC.digest) in message
    assert "registry.test/app" in message
    assert not stream.finished
    assert stream.error is info.value


def test_short_stream_raises_size_mismatch() -> None:
    stream = VerifiedStream(_chunks(BLOB[:-1]), DESC, "origin")
    with pytest.raises(SizeMismatchError, match=f"{len(BLOB) - 1} bytes, expected {len(BLOB)}"):
        stream.drain()
    assert not stream.finished


def test_truncated_stream_does_not_pass_on_a_second_attempt_to_finish() -> None:
    stream = VerifiedStream(_chunks(BLOB[:-1]), DESC, "origin")
    with pytest.raises(SizeMismatchError):
        stream.drain()
    with pytest.raises(SizeMismatchError):
        next(stream)


def test_longer_stream_fails_as_soon_as_the_excess_arrives() -> None:
    pulled: list[int] = []

    def endless() -> Iterator[bytes]:
        # Exactly the blob, then an unbounded tail: a hostile server that never stops.
        for i, chunk in enumerate(_chunks(BLOB)):
            pulled.append(i)
            yield chunk
        n = len(pulled)
        while True:
            pulled.append(n)
            n += 1
            yield b"x" * 1000

    stream = VerifiedStream(endless(), DESC, "origin")
    exact_chunks = len(_chunks(BLOB))
    with pytest.raises(SizeMismatchError, match="longer than"):
        stream.drain()
    # One chunk beyond the blob was pulled, and not one more.
    assert len(pulled) == exact_chunks + 1
    assert isinstance(stream.error, SizeMismatchError)


def test_excess_in_the_same_chunk_as_the_last_good_byte_is_refused() -> None:
    stream = VerifiedStream([BLOB + b"!"], DESC, "origin")
    with pytest.raises(SizeMismatchError):
        next(stream)


def test_same_length_different_content_is_not_mistaken_for_a_size_error() -> None:
    stream = VerifiedStream([b"\x00" * len(BLOB)], DESC, "origin")
    with pytest.raises(DigestMismatchError):
        stream.drain()


def test_read_exact_refuses_more_than_the_limit() -> None:
    assert read_exact([b"ab", b"cd"], 4) == b"abcd"
    with pytest.raises(SizeMismatchError):
        read_exact([b"ab", b"cde"], 4)
