"""Image manifests and indexes, OCI and Docker v2, kept as the exact bytes they arrived as.

A manifest's digest is the hash of its bytes, so bundler never re-serialises one: the parsed
fields are a read-only view of ``raw``. A top-level ``mediaType`` is optional in the OCI spec
(umoci and Helm v4 omit it); the type then comes from the transport's hint or the shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bundler.errors import DigestMismatchError, ManifestError
from bundler.model import mediatypes as mt
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest

# distribution refuses manifests over 4 MiB; so do we, before parsing a byte of them.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_DESCRIPTORS = 10_000


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two parsers that disagree on which duplicate wins see two different manifests under one
    # digest. Refuse the ambiguity outright.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ManifestError(f"duplicate key {key!r} in manifest JSON")
        out[key] = value
    return out


def load_json_strict(raw: bytes, what: str) -> Any:
    """JSON with duplicate keys refused; any parse failure is a ManifestError naming ``what``."""
    try:
        return json.loads(raw, object_pairs_hook=_no_duplicate_keys)
    except ManifestError:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ManifestError(f"{what} nests too deeply to be a manifest") from None


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest or index; ``raw`` is authoritative and ``digest`` is its hash."""

    raw: bytes
    digest: Digest
    media_type: str
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    manifests: tuple[Descriptor, ...] = ()
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def is_index(self) -> bool:
        """True for an OCI image index or a Docker manifest list."""
        return self.media_type in mt.INDEXES

    @property
    def size(self) -> int:
        """The size of ``raw`` in bytes, as a descriptor of this manifest states it."""
        return len(self.raw)

    def blobs(self) -> tuple[Descriptor, ...]:
        """Config and layers: the non-manifest content an image manifest pins."""
        return ((self.config,) if self.config else ()) + self.layers

    def descriptor(self) -> Descriptor:
        """A descriptor of this manifest (type, digest, size, artifactType), no annotations."""
        return Descriptor(
            self.media_type, self.digest, len(self.raw), artifact_type=self.artifact_type
        )


def _infer_media_type(doc: dict[str, Any], hint: str | None) -> str:
    declared = doc.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise ManifestError("'mediaType' must be a string")
    if declared and hint and hint in mt.MANIFESTS and declared != hint:
        raise ManifestError(f"manifest declares {declared} but was served as {hint}")
    media_type = declared or (hint if hint in mt.MANIFESTS else None)
    if media_type is None:
        if "manifests" in doc and "config" not in doc:
            media_type = mt.OCI_INDEX
        elif "config" in doc and "layers" in doc:
            media_type = mt.OCI_MANIFEST
        else:
            raise ManifestError("cannot tell whether this is an image manifest or an index")
    if media_type not in mt.MANIFESTS:
        raise ManifestError(f"unsupported manifest media type {media_type!r}")
    return media_type


def _descriptors(doc: dict[str, Any], key: str, required: bool) -> tuple[Descriptor, ...]:
    value = doc.get(key)
    if value is None:
        if required:
            raise ManifestError(f"manifest lacks '{key}'")
        return ()
    if not isinstance(value, list):
        raise ManifestError(f"'{key}' must be a list")
    if len(value) > MAX_DESCRIPTORS:
        raise ManifestError(f"'{key}' has {len(value)} entries, more than {MAX_DESCRIPTORS}")
    return tuple(Descriptor.from_json(item) for item in value)


def _annotations_and_artifact_type(
    doc: dict[str, Any], digest: Digest
) -> tuple[dict[str, str], str | None]:
    annotations = doc.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise ManifestError(f"manifest {digest} has invalid 'annotations'")
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise ManifestError(f"manifest {digest} has an invalid 'artifactType'")
    return annotations, artifact_type


def parse_manifest(
    raw: bytes, *, media_type: str | None = None, expected: Digest | None = None
) -> Manifest:
    """Parse manifest bytes, checking them against ``expected`` first when given.

    ``media_type`` is the type the transport reported (Content-Type, descriptor); it is only a
    hint where the document declares its own.
    """
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest is {len(raw)} bytes, more than {MAX_MANIFEST_BYTES}")
    digest = Digest.of(raw, expected.algorithm if expected else "sha256")
    if expected is not None and digest != expected:
        raise DigestMismatchError(f"manifest {expected} has digest {digest}")
    doc = load_json_strict(raw, f"manifest {digest}")
    if not isinstance(doc, dict):
        raise ManifestError(f"manifest {digest} is not a JSON object")
    if doc.get("schemaVersion") != 2:
        raise ManifestError(
            f"manifest {digest} has schemaVersion {doc.get('schemaVersion')!r}; only 2 is supported"
        )
    kind = _infer_media_type(doc, media_type)
    annotations, artifact_type = _annotations_and_artifact_type(doc, digest)
    subject = Descriptor.from_json(doc["subject"]) if doc.get("subject") is not None else None
    try:
        if kind in mt.INDEXES:
            if "config" in doc or "layers" in doc:
                raise ManifestError("an index must not carry 'config' or 'layers'")
            return Manifest(
                raw=raw,
                digest=digest,
                media_type=kind,
                manifests=_descriptors(doc, "manifests", required=True),
                subject=subject,
                artifact_type=artifact_type,
                annotations=annotations,
            )
        if "manifests" in doc:
            raise ManifestError("an image manifest must not carry 'manifests'")
        return Manifest(
            raw=raw,
            digest=digest,
            media_type=kind,
            config=Descriptor.from_json(doc.get("config")),
            layers=_descriptors(doc, "layers", required=True),
            subject=subject,
            artifact_type=artifact_type,
            annotations=annotations,
        )
    except ManifestError as exc:
        raise ManifestError(f"manifest {digest}: {exc}") from None
