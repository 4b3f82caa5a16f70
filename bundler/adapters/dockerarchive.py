"""``docker save`` tarballs as a source (``docker-archive:FILE.tar[:REF]``, as in skopeo).

A docker archive holds ``manifest.json`` (``[{"Config", "RepoTags", "Layers"}, ...]``), one
config file per image and one tar per layer, uncompressed or gzip; Docker 25+ adds an OCI
layout over the same files. No registry manifest is stored, so one is built here, in memory:
a Docker v2 image manifest whose config and layers are the files exactly as stored.

Reading never extracts, as for layout tars: member headers are indexed once, every member is
checked (a safe relative path, no devices, no duplicates, no hard links, symbolic links only
to names inside the archive) and blobs are served straight from their offsets in the tar.
Symbolic links are followed inside the index because ``docker save`` writes one for a layer
it already stored, and skopeo writes ``<id>/layer.tar`` as one.

Opening hashes the selected image's layers once. The config's ``rootfs.diff_ids`` are the
archive's own integrity record: a layer whose (uncompressed) content disagrees is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import re
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bundler.adapters.archive import safe_member_name, scan_tar
from bundler.adapters.base import ClosedOnExit
from bundler.adapters.layout import MAX_INDEX_BYTES
from bundler.adapters.stream import CHUNK_SIZE
from bundler.errors import (
    DigestMismatchError,
    ManifestError,
    NotFoundError,
    ReferenceFormatError,
    TransportError,
    UnsafeArchiveError,
    UsageError,
)
from bundler.model import mediatypes as mt
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest, Hasher
from bundler.model.manifest import (
    MAX_DESCRIPTORS,
    Manifest,
    load_json_strict,
    parse_manifest,
)
from bundler.model.reference import Reference

MANIFEST_FILE = "manifest.json"
MAX_MANIFEST_JSON_BYTES = MAX_INDEX_BYTES
MAX_CONFIG_BYTES = 16 * 1024 * 1024
MAX_IMAGES = MAX_DESCRIPTORS
MAX_LINK_HOPS = 8

DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

_GZIP_MAGIC = b"\x1f\x8b"
_OTHER_COMPRESSIONS = (
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
_INDEX_REF = re.compile(r"@(\d{1,9})\Z", re.ASCII)


@dataclass(frozen=True)
class _Member:
    offset: int
    size: int


@dataclass(frozen=True)
class ArchiveImage:
    """One entry of ``manifest.json``."""

    config: str
    repo_tags: tuple[str, ...]
    layers: tuple[str, ...]


# Complexity kept: manifest.json checked field by field; one check per field.
def parse_archive_manifest(raw: bytes, origin: str) -> list[ArchiveImage]:  # noqa: C901
    """Strictly parse a docker archive's ``manifest.json``."""
    doc = load_json_strict(raw, f"{origin} {MANIFEST_FILE}")
    if not isinstance(doc, list) or not doc:
        raise ManifestError(f"{origin}: {MANIFEST_FILE} is not a non-empty list of images")
    if len(doc) > MAX_IMAGES:
        raise ManifestError(f"{origin}: {MANIFEST_FILE} lists more than {MAX_IMAGES} images")
    images: list[ArchiveImage] = []
    for number, entry in enumerate(doc):
        where = f"{origin}: {MANIFEST_FILE} entry {number}"
        if not isinstance(entry, dict):
            raise ManifestError(f"{where} is not an object")
        config = entry.get("Config")
        if not isinstance(config, str) or not config:
            raise ManifestError(f"{where} lacks a 'Config' path")
        tags = entry.get("RepoTags")
        if tags is None:
            tags = []  # docker writes null for an image saved by ID
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ManifestError(f"{where} has invalid 'RepoTags'")
        layers = entry.get("Layers")
        if not isinstance(layers, list) or not all(isinstance(p, str) and p for p in layers):
            raise ManifestError(f"{where} has invalid 'Layers'")
        if len(layers) > MAX_DESCRIPTORS:
            raise ManifestError(f"{where} has more than {MAX_DESCRIPTORS} layers")
        if entry.get("LayerSources"):
            raise ManifestError(f"{where} has foreign layers ('LayerSources'), not stored here")
        images.append(ArchiveImage(config, tuple(tags), tuple(layers)))
    return images


def _normalised_tag(tag: str) -> Reference | None:
    try:
        ref = Reference.parse(tag)
    except ReferenceFormatError:
        return None
    return ref if ref.digest is None else None


def serialise_manifest(config: Descriptor, layers: list[Descriptor]) -> bytes:
    """A Docker v2 image manifest in the bytes containers/image (Go's json.Marshal) writes."""

    def desc(d: Descriptor) -> dict[str, Any]:
        return {"mediaType": d.media_type, "size": d.size, "digest": str(d.digest)}

    doc = {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST,
        "config": desc(config),
        "layers": [desc(layer) for layer in layers],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


class _GzipHasher:
    """Hashes the uncompressed content of a (possibly multi-member) gzip stream.

    Output is produced at most ``CHUNK_SIZE`` bytes at a time, so a highly compressed layer
    costs time, never memory. After the last member only zero padding may follow.
    """

    def __init__(self, hasher: Hasher) -> None:
        self._hasher = hasher
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._tail = b""  # bytes after the end of a member, until we know what they start
        self._padding = False

    def update(self, data: bytes) -> None:
        pending = data
        while True:
            if self._inflate.eof:
                if not self._between_members(pending):
                    return
                pending, self._tail = self._tail, b""
                self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = self._inflate.decompress(pending, CHUNK_SIZE)
            self._hasher.update(out)
            pending = self._inflate.unconsumed_tail
            if self._inflate.eof:
                pending = self._inflate.unused_data + pending
                if not pending:
                    return
            elif not pending and len(out) < CHUNK_SIZE:
                return

    def _between_members(self, data: bytes) -> bool:
        """Whether ``data`` (after a member's end) starts another member."""
        if self._padding:
            if data.strip(b"\x00"):
                raise ManifestError("gzip stream has trailing data")
            return False
        self._tail += data
        if self._tail[:2] == _GZIP_MAGIC:
            return True
        if self._tail in (b"", _GZIP_MAGIC[:1]):
            return False  # too short to tell yet
        self._padding = True
        tail, self._tail = self._tail, b""
        return self._between_members(tail)

    def finish(self) -> None:
        if not self._inflate.eof or self._tail:
            raise ManifestError("gzip stream is truncated")


class DockerArchiveSource(ClosedOnExit):
    """A :class:`~bundler.adapters.base.Source` over one image of a ``docker save`` tar.

    ``ref`` selects the image: a reference matching one of its ``RepoTags`` (compared
    normalised, so ``nginx:1.25`` matches ``docker.io/library/nginx:1.25``), ``@N`` for the
    N-th entry of ``manifest.json`` counting from 0, or nothing for the only image.
    """

    def __init__(self, path: Path, ref: str | None) -> None:
        self.path = path
        self.ref = ref
        self.origin = f"docker-archive:{path}"
        self.name = f"{self.origin}:{ref}" if ref else self.origin
        self._files: dict[str, _Member] = {}
        self._links: dict[str, str] = {}
        self._blobs: dict[Digest, _Member] = {}
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise NotFoundError(f"archive {path} does not exist") from None
        except IsADirectoryError:
            raise UsageError(f"{path} is a directory, not a docker archive") from None
        except OSError as exc:
            raise TransportError(f"cannot open {path}: {exc.strerror}") from None
        try:
            self._index_members()
            self.images = parse_archive_manifest(
                self._read_small(MANIFEST_FILE, MAX_MANIFEST_JSON_BYTES), self.origin
            )
            self.image, self._ref_name = self._select()
            self.manifest = self._build_manifest(self.image)
        except BaseException:
            os.close(self._fd)
            raise

    # ------------------------------------------------------------------ the tar index
    def _index_members(self) -> None:
        archive_size = os.fstat(self._fd).st_size
        seen: set[str] = set()
        for name, info in scan_tar(self._fd, self.path):
            if name in seen:
                raise UnsafeArchiveError(
                    f"archive member {name!r} appears twice; refusing the ambiguity"
                )
            seen.add(name)
            if info.isdir():
                continue
            if info.issym():
                self._links[name] = self._link_target(info)
            elif info.islnk():
                raise UnsafeArchiveError(
                    f"archive member {info.name!r} is a hard link; not allowed"
                )
            elif not info.isreg() or info.issparse():
                raise UnsafeArchiveError(
                    f"archive member {info.name!r} is a special file; only plain "
                    "files, directories and links inside the archive are allowed"
                )
            else:
                if info.offset_data + info.size > archive_size:
                    raise UnsafeArchiveError(f"{self.path} is truncated at {name!r}")
                self._files[name] = _Member(info.offset_data, info.size)

    @staticmethod
    def _link_target(info: tarfile.TarInfo) -> str:
        target = info.linkname
        if not target or target.startswith("/"):
            raise UnsafeArchiveError(
                f"archive member {info.name!r} links to {target!r}, outside the archive"
            )
        parent = posixpath.dirname(posixpath.normpath(info.name))
        joined = posixpath.join(parent, target) if parent else target
        return safe_member_name(joined, f"link {info.name!r} -> {target!r}, resolved to")

    def _member(self, name: str) -> _Member:
        """The plain file a ``manifest.json`` path names, following in-archive links."""
        try:
            current = safe_member_name(name, f"{MANIFEST_FILE} path")
        except UnsafeArchiveError as exc:
            raise ManifestError(f"{self.origin}: {exc}") from None
        for _ in range(MAX_LINK_HOPS + 1):
            member = self._files.get(current)
            if member is not None:
                return member
            target = self._links.get(current)
            if target is None:
                raise ManifestError(f"{self.origin}: {name!r} is not a file in the archive")
            current = target
        raise ManifestError(
            f"{self.origin}: {name!r} is a chain of more than {MAX_LINK_HOPS} links"
        )

    def _read_small(self, name: str, limit: int) -> bytes:
        if name not in self._files and name not in self._links:
            raise NotFoundError(f"{self.path} is not a docker archive: it has no {name}")
        member = self._member(name)
        if member.size > limit:
            raise ManifestError(f"{self.origin}: {name} exceeds {limit} bytes")
        return b"".join(self._chunks(member))

    def _chunks(self, member: _Member) -> Iterator[bytes]:
        offset, remaining = member.offset, member.size
        while remaining > 0:
            try:
                chunk = os.pread(self._fd, min(CHUNK_SIZE, remaining), offset)
            except OSError as exc:
                raise TransportError(f"cannot read {self.path}: {exc.strerror}") from None
            if not chunk:
                raise TransportError(f"{self.origin} is truncated")
            offset += len(chunk)
            remaining -= len(chunk)
            yield chunk

    # ------------------------------------------------------------------ selection
    def _tag_list(self) -> str:
        tags = [t for image in self.images for t in image.repo_tags]
        shown = ", ".join(tags[:10]) or "none"
        return shown + (f" and {len(tags) - 10} more" if len(tags) > 10 else "")

    def _select(self) -> tuple[ArchiveImage, str | None]:
        count = len(self.images)
        if self.ref is None:
            if count != 1:
                raise UsageError(
                    f"{self.origin} holds {count} images; name one as {self.origin}:REF "
                    f"or :@N (tags: {self._tag_list()})"
                )
            return self.images[0], self._only_tag(self.images[0])
        by_index = _INDEX_REF.match(self.ref)
        if by_index:
            number = int(by_index.group(1))
            if number >= count:
                raise UsageError(
                    f"{self.origin} holds {count} images; @{number} is out of range "
                    f"(tags: {self._tag_list()})"
                )
            return self.images[number], self._only_tag(self.images[number])
        wanted = Reference.parse(self.ref)
        if wanted.digest is not None:
            raise UsageError(f"{self.name}: a docker archive is selected by tag, not digest")
        found = [
            image
            for image in self.images
            if any(_normalised_tag(tag) == wanted for tag in image.repo_tags)
        ]
        if not found:
            raise UsageError(
                f"{self.origin} has no image tagged {self.ref!r} (tags: {self._tag_list()})"
            )
        if len(found) > 1:
            raise ManifestError(f"{self.origin}: tag {self.ref!r} names several images")
        return found[0], str(wanted)

    @staticmethod
    def _only_tag(image: ArchiveImage) -> str | None:
        if len(image.repo_tags) != 1:
            return None
        ref = _normalised_tag(image.repo_tags[0])
        return str(ref) if ref is not None else None

    # ------------------------------------------------------------------ the manifest
    def _build_manifest(self, image: ArchiveImage) -> Manifest:
        config_member = self._member(image.config)
        if config_member.size > MAX_CONFIG_BYTES:
            raise ManifestError(f"{self.origin}: config {image.config} is too large")
        config_raw = b"".join(self._chunks(config_member))
        diff_ids = self._diff_ids(config_raw, image)
        config = Descriptor(mt.DOCKER_CONFIG, Digest.of(config_raw), len(config_raw))
        self._blobs[config.digest] = config_member
        layers: list[Descriptor] = []
        hashed: dict[_Member, tuple[Descriptor, Digest]] = {}
        for path, diff_id in zip(image.layers, diff_ids, strict=True):
            member = self._member(path)
            if member not in hashed:
                hashed[member] = self._hash_layer(path, member, diff_id)
            layer, content = hashed[member]
            if content != diff_id:
                raise DigestMismatchError(
                    f"{self.origin}: layer {path} has content {content} but the image config "
                    f"records diff_id {diff_id}: the archive was altered"
                )
            self._blobs[layer.digest] = member
            layers.append(layer)
        raw = serialise_manifest(config, layers)
        return parse_manifest(raw, media_type=mt.DOCKER_MANIFEST)

    def _diff_ids(self, config_raw: bytes, image: ArchiveImage) -> list[Digest]:
        doc = load_json_strict(config_raw, f"{self.origin} config {image.config}")
        rootfs = doc.get("rootfs") if isinstance(doc, dict) else None
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
            raise ManifestError(
                f"{self.origin}: config {image.config} lacks a 'rootfs.diff_ids' list"
            )
        if len(diff_ids) != len(image.layers):
            raise ManifestError(
                f"{self.origin}: config {image.config} records {len(diff_ids)} diff_ids for "
                f"{len(image.layers)} layers"
            )
        try:
            return [Digest.parse(d) for d in diff_ids]
        except ReferenceFormatError as exc:
            raise ManifestError(f"{self.origin}: config {image.config}: {exc}") from None

    def _hash_layer(self, path: str, member: _Member, diff_id: Digest) -> tuple[Descriptor, Digest]:
        """The layer's descriptor (the file as stored) and the digest of its tar content."""
        head = b"".join(self._chunks(_Member(member.offset, min(member.size, 8))))
        for magic, kind in _OTHER_COMPRESSIONS:
            if head.startswith(magic):
                raise ManifestError(
                    f"{self.origin}: layer {path} is {kind}-compressed, which a Docker v2 "
                    "manifest cannot describe"
                )
        gzipped = head.startswith(_GZIP_MAGIC)
        stored = hashlib.sha256()
        content = diff_id.hasher()
        inflate = _GzipHasher(content) if gzipped else None
        for chunk in self._chunks(member):
            stored.update(chunk)
            if inflate is not None:
                inflate.update(chunk)
            else:
                content.update(chunk)
        if inflate is not None:
            try:
                inflate.finish()
            except (ManifestError, zlib.error) as exc:
                raise ManifestError(f"{self.origin}: layer {path}: {exc}") from None
        descriptor = Descriptor(
            DOCKER_LAYER_GZIP if gzipped else DOCKER_LAYER,
            Digest("sha256", stored.hexdigest()),
            member.size,
        )
        return descriptor, Digest(diff_id.algorithm, content.hexdigest())

    # ------------------------------------------------------------------ Source
    def resolve(self) -> Descriptor:
        """Source.resolve: the Docker v2 manifest built for the chosen image of the archive."""
        return self.manifest.descriptor()

    def ref_name(self) -> str | None:
        """Source.ref_name: the normalised tag matched, else the image's only ``RepoTags`` entry."""
        return self._ref_name

    def fetch_manifest(self, descriptor: Descriptor) -> Manifest:
        """Source.fetch_manifest: only the one built manifest exists; NotFoundError for others."""
        if descriptor.digest != self.manifest.digest:
            raise NotFoundError(f"{self.name} has no manifest {descriptor.digest}")
        return self.manifest

    def open_blob(self, descriptor: Descriptor) -> Iterator[bytes]:
        """Source.open_blob: the config or layer file, read in place; NotFoundError if unknown."""
        member = self._blobs.get(descriptor.digest)
        if member is None:
            raise NotFoundError(f"{self.name} lacks blob {descriptor.digest}")
        return self._chunks(member)

    def find_tag(self, tag: str) -> Descriptor | None:
        """Source.find_tag: always None; a ``docker save`` tar holds no signatures."""
        return None

    def referrers(self, subject: Digest) -> list[Descriptor]:
        """Source.referrers: always empty; a ``docker save`` tar holds no referrers."""
        return []

    def inventory(self) -> None:
        """Source.inventory: none; a docker save tar is read for the images it names."""
        return None

    def close(self) -> None:
        """Source.close: close the archive file."""
        with contextlib.suppress(OSError):
            os.close(self._fd)
