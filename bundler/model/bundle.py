"""The bundle format: one OCI index pinning the chart, every image, and the lock document.

```
index  (artifactType application/vnd.bundler.bundle.v1+json)
├── chart manifest  (Helm OCI: config application/vnd.cncf.helm.config.v1+json,
│                    layer application/vnd.cncf.helm.chart.content.v1.tar+gzip)
├── image manifest or index, exactly as upstream published it   (one per image)
└── lock manifest   (artifactType application/vnd.bundler.lock.v1+json,
                     one layer: the lock document, canonical JSON)
```

Each entry of the index carries ``dev.bundler.role`` (chart, image, lock); image entries carry
``dev.bundler.image.ref``, the reference the chart uses. Signing the index digest covers
everything: every child is pinned by digest, and so is every blob under it.

Everything here is built from its inputs alone, so the same inputs give the same bytes.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from bundler.errors import ManifestError
from bundler.model import mediatypes as mt
from bundler.model.descriptor import Descriptor, Platform
from bundler.model.digest import Digest
from bundler.model.manifest import Manifest, load_json_strict, parse_manifest
from bundler.model.rendering import RenderSettings

BUNDLE_ARTIFACT_TYPE = "application/vnd.bundler.bundle.v1+json"
LOCK_MEDIA_TYPE = "application/vnd.bundler.lock.v1+json"
LOCK_SCHEMA_VERSION = 1

ANNOTATION_ROLE = "dev.bundler.role"
ANNOTATION_IMAGE_REF = "dev.bundler.image.ref"
ANNOTATION_TITLE = "org.opencontainers.image.title"
ANNOTATION_VERSION = "org.opencontainers.image.version"
ANNOTATION_DESCRIPTION = "org.opencontainers.image.description"
ANNOTATION_CREATED = "org.opencontainers.image.created"
# On a delta archive's index.json entry (not signed: a hint for people): the bundle it was made
# against, as NAME:TAG@DIGEST; the blobs both hold are left out.
ANNOTATION_DELTA_BASE = "dev.bundler.delta.base"

ROLE_CHART = "chart"
ROLE_IMAGE = "image"
ROLE_LOCK = "lock"

EMPTY_JSON = b"{}"
EMPTY_DESCRIPTOR = Descriptor(mt.OCI_EMPTY, Digest.of(EMPTY_JSON), len(EMPTY_JSON))

MAX_LOCK_BYTES = 4 * 1024 * 1024


def canonical_json(doc: Any) -> bytes:
    """Sorted keys, no insignificant white space: one document, one byte string."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class ValuePath:
    """Where in the chart's values an image reference (or a part of it) lives, and which part.

    ``form`` is the part the value sets, as differential rendering found it: ``registry``,
    ``repository``, ``tag``, ``digest``, ``reference`` (all of it) or ``part``; or, for paths
    named by hand or guessed without rendering, ``string`` ("repo:tag") or ``map``
    (registry/repository/tag/digest keys).
    """

    path: str
    form: str

    def to_json(self) -> dict[str, str]:
        """The lock document's ``{"path", "form"}`` object."""
        return {"path": self.path, "form": self.form}


@dataclass(frozen=True)
class LockedUse:
    """One place the rendered chart runs an image, and how values compose the reference there.

    ``composition`` is the reference as rendered with each value-controlled part replaced by
    ``{path}`` (``{@path}`` where the chart adds ``@`` and the value when the value is set);
    None where no value controls it (a literal in a template).
    """

    place: str
    where: str
    written: str
    composition: str | None

    def to_json(self) -> dict[str, Any]:
        """The lock document's use object."""
        return {
            "place": self.place,
            "where": self.where,
            "written": self.written,
            "composition": self.composition,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> LockedUse:
        """The inverse of ``to_json``."""
        composition = doc["composition"]
        if composition is not None and not isinstance(composition, str):
            raise TypeError("composition")
        return cls(str(doc["place"]), str(doc["where"]), str(doc["written"]), composition)


@dataclass(frozen=True)
class LockedImage:
    """One image as the lock records it: digest, total size, platforms, and where it was found."""

    reference: str  # as the chart names it, normalised (docker.io/library/nginx:1.25)
    digest: Digest
    media_type: str
    size: int  # bytes of every manifest and blob under the image, each counted once
    platforms: tuple[str, ...]
    value_paths: tuple[ValuePath, ...] = ()
    found_by: tuple[str, ...] = ()  # config, annotation, values, template
    uses: tuple[LockedUse, ...] = ()  # where the rendered chart runs it (empty if not rendered)

    def to_json(self) -> dict[str, Any]:
        """The lock document's image object (camelCase keys, digest as a string)."""
        doc: dict[str, Any] = {
            "reference": self.reference,
            "digest": str(self.digest),
            "mediaType": self.media_type,
            "size": self.size,
            "platforms": list(self.platforms),
            "valuePaths": [v.to_json() for v in self.value_paths],
            "foundBy": list(self.found_by),
        }
        if self.uses:
            doc["uses"] = [u.to_json() for u in self.uses]
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> LockedImage:
        """The inverse of ``to_json``; a missing key raises KeyError (``BundleLock`` reports it)."""
        return cls(
            reference=doc["reference"],
            digest=Digest.parse(doc["digest"]),
            media_type=doc["mediaType"],
            size=doc["size"],
            platforms=tuple(doc["platforms"]),
            value_paths=tuple(ValuePath(v["path"], v["form"]) for v in doc["valuePaths"]),
            found_by=tuple(doc["foundBy"]),
            uses=tuple(LockedUse.from_json(u) for u in doc.get("uses", ())),
        )


@dataclass(frozen=True)
class LockedChart:
    """The chart as the lock records it: versions, manifest and archive digests, source kind."""

    name: str
    version: str
    app_version: str | None
    manifest: Digest
    archive: Digest
    source: str  # directory, archive or oci (the kind only: paths would make bytes differ)

    def to_json(self) -> dict[str, Any]:
        """The lock document's chart object (camelCase keys, digests as strings)."""
        return {
            "name": self.name,
            "version": self.version,
            "appVersion": self.app_version,
            "manifest": str(self.manifest),
            "archive": str(self.archive),
            "source": self.source,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> LockedChart:
        """The inverse of ``to_json``; ``appVersion`` may be absent, every other key is required."""
        return cls(
            name=doc["name"],
            version=doc["version"],
            app_version=doc.get("appVersion"),
            manifest=Digest.parse(doc["manifest"]),
            archive=Digest.parse(doc["archive"]),
            source=doc["source"],
        )


@dataclass(frozen=True)
class BundleLock:
    """The "verified manifest": what the bundle holds and where the chart refers to it."""

    name: str
    version: str
    chart: LockedChart
    images: tuple[LockedImage, ...]
    rendered: bool  # whether the chart's templates were rendered to check completeness
    created: str | None = None
    allowed_missing: tuple[str, ...] = ()
    rendering: RenderSettings | None = None  # the values etc. the chart was rendered with

    def to_json(self) -> dict[str, Any]:
        """The lock document; images sorted by reference, so equal locks give equal documents."""
        return {
            "schemaVersion": LOCK_SCHEMA_VERSION,
            "kind": "BundleLock",
            "bundle": {"name": self.name, "version": self.version, "created": self.created},
            "chart": self.chart.to_json(),
            "images": [i.to_json() for i in sorted(self.images, key=lambda i: i.reference)],
            "completeness": self._completeness(),
        }

    def _completeness(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "rendered": self.rendered,
            "allowedMissing": sorted(self.allowed_missing),
        }
        if self.rendering is not None:
            doc["rendering"] = self.rendering.to_json()
        return doc

    def to_bytes(self) -> bytes:
        """The lock document as canonical JSON: the exact bytes the lock layer carries."""
        return canonical_json(self.to_json())

    @classmethod
    def from_bytes(cls, raw: bytes) -> BundleLock:
        """Parse a lock document; ManifestError if too large, of another schema, or malformed."""
        if len(raw) > MAX_LOCK_BYTES:
            raise ManifestError(f"bundle lock is {len(raw)} bytes, more than {MAX_LOCK_BYTES}")
        doc = load_json_strict(raw, "bundle lock")
        try:
            if doc.get("schemaVersion") != LOCK_SCHEMA_VERSION or doc.get("kind") != "BundleLock":
                raise ManifestError("not a bundle lock of schemaVersion 1")
            return cls(
                name=doc["bundle"]["name"],
                version=doc["bundle"]["version"],
                created=doc["bundle"].get("created"),
                chart=LockedChart.from_json(doc["chart"]),
                images=tuple(LockedImage.from_json(i) for i in doc["images"]),
                rendered=doc["completeness"]["rendered"],
                allowed_missing=tuple(doc["completeness"]["allowedMissing"]),
                rendering=(
                    RenderSettings.from_json(doc["completeness"]["rendering"])
                    if "rendering" in doc["completeness"]
                    else None
                ),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ManifestError(f"bundle lock is malformed: missing or bad {exc}") from None


@dataclass(frozen=True)
class Blob:
    """Bytes bundler made itself (chart config, lock document), with their descriptor."""

    descriptor: Descriptor
    data: bytes

    @classmethod
    def of(cls, media_type: str, data: bytes, annotations: dict[str, str] | None = None) -> Blob:
        """A blob of ``data`` with its descriptor computed (sha256 digest, size in bytes)."""
        return cls(Descriptor(media_type, Digest.of(data), len(data), annotations or {}), data)


def _descriptor_json(d: Descriptor) -> dict[str, Any]:
    return d.to_json()


def chart_manifest(config: Blob, archive: Blob, annotations: dict[str, str]) -> Manifest:
    """A Helm OCI chart manifest, as Helm itself lays it out."""
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": _descriptor_json(config.descriptor),
        "layers": [_descriptor_json(archive.descriptor)],
        "annotations": annotations,
    }
    return parse_manifest(canonical_json(doc), media_type=mt.OCI_MANIFEST)


def lock_manifest(lock: Blob) -> Manifest:
    """The lock manifest: an OCI artifact with the empty config and the lock as its one layer."""
    empty = EMPTY_DESCRIPTOR.to_json()
    empty["data"] = base64.b64encode(EMPTY_JSON).decode()
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": LOCK_MEDIA_TYPE,
        "config": empty,
        "layers": [_descriptor_json(lock.descriptor)],
    }
    return parse_manifest(canonical_json(doc), media_type=mt.OCI_MANIFEST)


@dataclass(frozen=True)
class BundleEntry:
    """One child of a bundle index: its role, its manifest, and for images the chart's reference."""

    role: str
    manifest: Manifest
    image_ref: str | None = None
    platform: Platform | None = None


def bundle_index(entries: list[BundleEntry], annotations: dict[str, str]) -> Manifest:
    """The bundle index over ``entries`` in the given order, each annotated with its role.

    Image entries also carry the reference the chart uses; the result is canonical JSON, so the same
    entries and annotations give the same digest.
    """
    manifests: list[dict[str, Any]] = []
    for entry in entries:
        notes = {ANNOTATION_ROLE: entry.role}
        if entry.image_ref is not None:
            notes[ANNOTATION_IMAGE_REF] = entry.image_ref
        d = entry.manifest.descriptor()
        descriptor = Descriptor(
            d.media_type,
            d.digest,
            d.size,
            notes,
            entry.platform,
            artifact_type=entry.manifest.artifact_type,
        )
        manifests.append(descriptor.to_json())
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "artifactType": BUNDLE_ARTIFACT_TYPE,
        "manifests": manifests,
        "annotations": annotations,
    }
    return parse_manifest(canonical_json(doc), media_type=mt.OCI_INDEX)


@dataclass
class BundleView:
    """A bundle index read back: which entry is which."""

    index: Manifest
    chart: Descriptor
    lock: Descriptor
    images: list[Descriptor] = field(default_factory=list)

    @classmethod
    def of(cls, index: Manifest) -> BundleView:
        """Read a bundle index back.

        ManifestError unless it has the bundle artifactType, exactly one chart and one lock.
        """
        if not index.is_index or index.artifact_type != BUNDLE_ARTIFACT_TYPE:
            raise ManifestError(
                f"{index.digest} is not a bundle (artifactType {index.artifact_type})"
            )
        charts = [d for d in index.manifests if d.annotations.get(ANNOTATION_ROLE) == ROLE_CHART]
        locks = [d for d in index.manifests if d.annotations.get(ANNOTATION_ROLE) == ROLE_LOCK]
        if len(charts) != 1 or len(locks) != 1:
            raise ManifestError(
                f"bundle {index.digest} must hold exactly one chart and one lock "
                f"(has {len(charts)} and {len(locks)})"
            )
        images = [d for d in index.manifests if d.annotations.get(ANNOTATION_ROLE) == ROLE_IMAGE]
        return cls(index, charts[0], locks[0], images)


def image_names(index: Manifest) -> list[tuple[str, Descriptor]]:
    """Each image entry of a bundle index with the reference the chart knows it by.

    Empty for anything that is not a bundle. Layouts and archives name the images so, for other
    tools.
    """
    if index.artifact_type != BUNDLE_ARTIFACT_TYPE:
        return []
    return [
        (d.annotations[ANNOTATION_IMAGE_REF], d)
        for d in index.manifests
        if d.annotations.get(ANNOTATION_ROLE) == ROLE_IMAGE
        and ANNOTATION_IMAGE_REF in d.annotations
    ]


def helm_tag(version: str) -> str:
    """Helm's OCI tag for a chart version: '+' is not allowed in tags and becomes '_'."""
    return version.replace("+", "_")
