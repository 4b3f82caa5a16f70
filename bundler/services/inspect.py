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
from bundler.errors import ManifestError, NotFoundError
from bundler.model.bundle import (
    ANNOTATION_IMAGE_REF,
    BUNDLE_ARTIFACT_TYPE,
    LOCK_MEDIA_TYPE,
    MAX_LOCK_BYTES,
    BundleLock,
    BundleView,
)
from bundler.model.certified import CERTIFICATE_ANNOTATION, MAX_CERTIFICATE_CHARS
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest
from bundler.services.copy import COSIGN_SUFFIXES
from bundler.services.graph import platforms, walk
from bundler.services.verify import delta_base


@dataclass
class InspectedImage:
    """One image of an inspected bundle: reference, digest, platforms, size, value paths."""

    reference: str
    digest: Digest
    media_type: str
    platforms: list[str]
    size: int
    value_paths: list[str] = field(default_factory=list)


@dataclass
class Signature:
    """A signature found for the artifact: a cosign ``.sig`` tag or a referrer (not verified)."""

    kind: str  # "cosign-tag" or "referrer"
    digest: Digest
    tag: str | None = None
    artifact_type: str | None = None
    certificates: list[dict[str, object]] = field(default_factory=list)  # what each layer's says


@dataclass
class InspectResult:
    """What ``inspect`` found; ``total_bytes`` counts per image, ``unique_bytes`` each blob once."""

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
    delta_base: str | None = None  # a delta archive: the base it names (an unsigned hint)
    absent_blobs: int = 0  # blobs under the artifact the source does not hold (a delta's)
    absent_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        """The ``inspect --output json`` document; the lock is left out (``--lock`` prints it)."""
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
            "delta": None
            if self.delta_base is None and not self.absent_blobs
            else {
                "base": self.delta_base,
                "absentBlobs": self.absent_blobs,
                "absentBytes": self.absent_bytes,
            },
            "signatures": [
                {
                    "kind": s.kind,
                    "digest": str(s.digest),
                    "tag": s.tag,
                    "artifactType": s.artifact_type,
                    "certificates": s.certificates,
                }
                for s in self.signatures
            ],
        }


def _signatures(source: Source, digest: Digest) -> list[Signature]:
    found: list[Signature] = []
    for suffix in COSIGN_SUFFIXES:
        tag = digest.tag_form() + suffix
        descriptor = source.find_tag(tag)
        if descriptor is not None:
            certificates = _certificates(source, descriptor)
            found.append(Signature("cosign-tag", descriptor.digest, tag, None, certificates))
    for referrer in source.referrers(digest):
        found.append(Signature("referrer", referrer.digest, artifact_type=referrer.artifact_type))
    return found


def _certificates(source: Source, descriptor: Descriptor) -> list[dict[str, object]]:
    """What the certificates a signature manifest's layers carry say (nothing verified)."""
    from bundler.adapters.x509 import describe_certificate
    from bundler.errors import BundlerError

    try:
        manifest = source.fetch_manifest(descriptor)
    except BundlerError:
        return []
    out: list[dict[str, object]] = []
    for layer in manifest.layers:
        pem = layer.annotations.get(CERTIFICATE_ANNOTATION)
        if pem is None or len(pem) > MAX_CERTIFICATE_CHARS:
            continue
        try:
            out.append(describe_certificate(pem.encode(), f"signature layer {layer.digest}"))
        except BundlerError:
            out.append({"kind": "certificate", "problem": "not one PEM certificate"})
    return out


def inspect(source: Source) -> InspectResult:
    """Describe the artifact ``source`` names; every manifest is digest-checked, nothing verified.

    A bundle is described by its chart and the images of its lock; any other artifact as one image.
    """
    root = source.resolve()
    index = source.fetch_manifest(root)
    whole = walk(source, root)  # every manifest and blob once: the unique bytes
    result = InspectResult(
        source=source.name,
        digest=index.digest,
        media_type=index.media_type,
        artifact_type=index.artifact_type,
        is_bundle=index.artifact_type == BUNDLE_ARTIFACT_TYPE,
        unique_bytes=whole.size,
    )
    result.signatures = _signatures(source, index.digest)
    inventory = source.inventory()
    if inventory is not None:  # a delta leaves out blobs its base holds
        absent = [d for d in whole.blobs.values() if not inventory.files.has_blob(d)]
        result.absent_blobs, result.absent_bytes = len(absent), sum(d.size for d in absent)
        result.delta_base = delta_base(source, index)
    if not result.is_bundle:
        result.images.append(
            InspectedImage(
                source.ref_name() or str(index.digest),
                index.digest,
                index.media_type,
                list(platforms(source, index)),
                whole.size,
            )
        )
        result.total_bytes = whole.size
        return result
    view = BundleView.of(index)
    lock = _read_lock(source, view.lock)
    result.lock = lock
    result.name, result.version = lock.name, lock.version
    chart_size = walk(source, view.chart).size
    result.chart = {
        "name": lock.chart.name,
        "version": lock.chart.version,
        "appVersion": lock.chart.app_version,
        "digest": str(view.chart.digest),
        "size": chart_size,
    }
    if view.chart.digest != lock.chart.manifest:
        raise ManifestError(
            f"bundle {index.digest}: the lock names chart {lock.chart.manifest} "
            f"but the index holds {view.chart.digest}"
        )
    total = index.size + chart_size + walk(source, view.lock).size
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
        size = walk(source, descriptor).size
        total += size
        try:
            found = list(platforms(source, whole.manifests[descriptor.digest]))
        except NotFoundError:  # a delta left the config to its base: the lock says
            found = list(entry.platforms)
        result.images.append(
            InspectedImage(
                ref,
                descriptor.digest,
                descriptor.media_type,
                found,
                size,
                [v.path for v in entry.value_paths],
            )
        )
    result.total_bytes = total
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
    """The lock document indented for people (``inspect --lock``), not the canonical bytes."""
    return json.dumps(lock.to_json(), indent=2)
