"""``bundler inspect``: what an artifact (a bundle above all) holds, without trusting it yet.

Inspection reads and digest-checks every manifest it shows, and cross-checks the lock document
against the index it sits in; it does not verify signatures (that is ``bundler verify``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bundler.adapters.base import Source
from bundler.adapters.stream import VerifiedStream, read_exact
from bundler.errors import ManifestError
from bundler.model import mediatypes as mt
from bundler.model.bundle import (
    ANNOTATION_IMAGE_REF,
    BUNDLE_ARTIFACT_TYPE,
    LOCK_MEDIA_TYPE,
    MAX_LOCK_BYTES,
    BundleLock,
    BundleView,
)
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest
from bundler.model.manifest import Manifest
from bundler.services.copy import COSIGN_SUFFIXES
from bundler.services.pack import image_platform


@dataclass
class InspectedImage:
    reference: str
    digest: Digest
    media_type: str
    platforms: list[str]
    size: int
    value_paths: list[str] = field(default_factory=list)


@dataclass
class Signature:
    kind: str  # "cosign-tag" or "referrer"
    digest: Digest
    tag: str | None = None
    artifact_type: str | None = None


@dataclass
class InspectResult:
    source: str
    digest: Digest
    media_type: str
    artifact_type: str | None
    is_bundle: bool
    name: str | None = None
    version: str | None = None
    chart: dict[str, Any] | None = None
    images: list[InspectedImage] = field(default_factory=list)
    total_bytes: int = 0
    unique_bytes: int = 0
    signatures: list[Signature] = field(default_factory=list)
    lock: BundleLock | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "digest": str(self.digest),
            "mediaType": self.media_type,
            "artifactType": self.artifact_type,
            "bundle": self.is_bundle,
            "name": self.name,
            "version": self.version,
            "chart": self.chart,
            "images": [
                {
                    "reference": i.reference,
                    "digest": str(i.digest),
                    "mediaType": i.media_type,
                    "platforms": i.platforms,
                    "size": i.size,
                    "valuePaths": i.value_paths,
                }
                for i in self.images
            ],
            "bytes": {"total": self.total_bytes, "unique": self.unique_bytes},
            "signatures": [
                {"kind": s.kind, "digest": str(s.digest), "tag": s.tag,
                 "artifactType": s.artifact_type}
                for s in self.signatures
            ],
        }


class _Walker:
    """Walks manifests, counting every manifest and blob once overall and per image."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.seen: set[Digest] = set()
        self.unique = 0

    def size_of(self, descriptor: Descriptor) -> tuple[int, Manifest]:
        local: set[Digest] = set()
        total = 0

        def count(digest: Digest, size: int) -> None:
            nonlocal total
            if digest not in local:
                local.add(digest)
                total += size
            if digest not in self.seen:
                self.seen.add(digest)
                self.unique += size

        def walk(d: Descriptor) -> Manifest:
            manifest = self.source.fetch_manifest(d)
            count(manifest.digest, manifest.size)
            if manifest.is_index:
                for child in manifest.manifests:
                    if child.media_type in mt.MANIFESTS:
                        walk(child)
                    else:
                        count(child.digest, child.size)
            else:
                for blob in manifest.blobs():
                    count(blob.digest, blob.size)
            return manifest

        root = walk(descriptor)
        return total, root


def _platforms(source: Source, manifest: Manifest) -> list[str]:
    if manifest.is_index:
        return [str(c.platform) for c in manifest.manifests
                if c.platform is not None and c.platform.os != "unknown"]
    if manifest.config is not None:
        return [image_platform(source, manifest.config)]
    return []


def _signatures(source: Source, digest: Digest) -> list[Signature]:
    found: list[Signature] = []
    for suffix in COSIGN_SUFFIXES:
        tag = digest.tag_form() + suffix
        descriptor = source.find_tag(tag)
        if descriptor is not None:
            found.append(Signature("cosign-tag", descriptor.digest, tag=tag))
    for referrer in source.referrers(digest):
        found.append(Signature("referrer", referrer.digest, artifact_type=referrer.artifact_type))
    return found


def inspect(source: Source) -> InspectResult:
    root = source.resolve()
    index = source.fetch_manifest(root)
    walker = _Walker(source)
    result = InspectResult(
        source=source.name, digest=index.digest, media_type=index.media_type,
        artifact_type=index.artifact_type, is_bundle=index.artifact_type == BUNDLE_ARTIFACT_TYPE,
    )
    result.signatures = _signatures(source, index.digest)
    if not result.is_bundle:
        size, manifest = walker.size_of(root)
        result.images.append(InspectedImage(
            source.ref_name() or str(index.digest), index.digest, index.media_type,
            _platforms(source, manifest), size,
        ))
        result.total_bytes, result.unique_bytes = size, walker.unique
        return result
    view = BundleView.of(index)
    walker.seen.add(index.digest)
    walker.unique += index.size
    lock = _read_lock(source, view.lock)
    result.lock = lock
    result.name, result.version = lock.name, lock.version
    chart_size, chart_manifest = walker.size_of(view.chart)
    result.chart = {
        "name": lock.chart.name, "version": lock.chart.version,
        "appVersion": lock.chart.app_version, "digest": str(chart_manifest.digest),
        "size": chart_size,
    }
    if chart_manifest.digest != lock.chart.manifest:
        raise ManifestError(
            f"bundle {index.digest}: the lock names chart {lock.chart.manifest} "
            f"but the index holds {chart_manifest.digest}"
        )
    lock_size, _ = walker.size_of(view.lock)
    total = index.size + chart_size + lock_size
    locked = {i.reference: i for i in lock.images}
    in_index = {d.annotations.get(ANNOTATION_IMAGE_REF, ""): d for d in view.images}
    if set(locked) != set(in_index):
        raise ManifestError(
            f"bundle {index.digest}: lock and index list different images "
            f"({sorted(set(locked) ^ set(in_index))})"
        )
    for ref, descriptor in sorted(in_index.items()):
        entry = locked[ref]
        if entry.digest != descriptor.digest:
            raise ManifestError(
                f"bundle {index.digest}: the lock pins {ref} to {entry.digest} "
                f"but the index holds {descriptor.digest}"
            )
        size, manifest = walker.size_of(descriptor)
        total += size
        result.images.append(InspectedImage(
            ref, descriptor.digest, descriptor.media_type, _platforms(source, manifest), size,
            [v.path for v in entry.value_paths],
        ))
    result.total_bytes, result.unique_bytes = total, walker.unique
    return result


def _read_lock(source: Source, descriptor: Descriptor) -> BundleLock:
    manifest = source.fetch_manifest(descriptor)
    layers = [layer for layer in manifest.layers if layer.media_type == LOCK_MEDIA_TYPE]
    if len(layers) != 1 or layers[0].size > MAX_LOCK_BYTES:
        raise ManifestError(f"lock manifest {manifest.digest} must hold one bounded lock layer")
    layer = layers[0]
    raw = read_exact(VerifiedStream(source.open_blob(layer), layer, source.name), layer.size)
    return BundleLock.from_bytes(raw)


def lock_json(lock: BundleLock) -> str:
    return json.dumps(lock.to_json(), indent=2)
