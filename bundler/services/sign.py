"""``bundler sign`` and ``bundler approve``: add a cosign simple-signing signature.

The signature goes where cosign and skopeo look for it: one more layer in the manifest under
the ``sha256-<hex>.sig`` tag of each signed digest (earlier signers' layers are kept), in the
registry repository, or in the layout or archive beside the bundle, so it travels with it.
By default every manifest the bundle pins is signed too, as ``cosign sign --recursive`` does,
because skopeo and podman check each image they copy out of an index, not the index.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from bundler.adapters.base import Source
from bundler.adapters.crypto import PrivateKey
from bundler.adapters.layout import LayoutTarget
from bundler.adapters.memory import MemoryTarget
from bundler.errors import VerificationError
from bundler.model.digest import Digest
from bundler.model.manifest import Manifest
from bundler.model.signature import (
    SignatureEntry,
    cosign_signature_tag,
    signature_entries,
    signature_manifest,
    simple_signing_payload,
)
from bundler.services import copy as copy_service
from bundler.services.graph import walk
from bundler.services.overlay import OverlaySource
from bundler.services.signatures import read_entry, signature_manifests
from bundler.services.transports import Location, Transports


@dataclass
class SignResult:
    """What ``sign`` did: the signed digest, key and identity, manifests signed, tags written."""

    digest: Digest
    target: str
    key_id: str
    identity: str
    signed: list[Digest] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        """The ``sign --output json`` document (camelCase keys, digests as strings)."""
        return {
            "digest": str(self.digest),
            "target": self.target,
            "keyId": self.key_id,
            "identity": self.identity,
            "signed": [str(d) for d in self.signed],
            "tags": self.tags,
        }


def default_identity(location: Location, source: Source, index: Manifest) -> str:
    """The repository a signature names: the registry repository, else the bundle's name."""
    if location.reference is not None:
        return location.reference.name
    title = index.annotations.get("org.opencontainers.image.title")
    return title or source.ref_name() or str(index.digest)


def _subjects(source: Source, index: Manifest, recursive: bool) -> list[Manifest]:
    """The index, then (recursive) every manifest it pins."""
    if not recursive:
        return [index]
    return list(walk(source, index.descriptor()).manifests.values())  # the index comes first


def sign(
    location: Location,
    key: PrivateKey,
    transports: Transports,
    *,
    recursive: bool = True,
    identity: str | None = None,
    annotations: dict[str, str] | None = None,
    expected: Digest | None = None,
) -> SignResult:
    """Sign what ``location`` names.

    With ``expected``, sign only if it still resolves to that digest: an approval signs exactly
    the bundle that was verified, even if a tag moved since.
    """
    source = transports.open_source(location)
    try:
        index = source.fetch_manifest(source.resolve())
        if expected is not None and index.digest != expected:
            raise VerificationError(
                2,
                f"{location} now resolves to {index.digest}, not the verified {expected}; "
                "nothing was signed",
            )
        claim = identity or default_identity(location, source, index)
        overlay = OverlaySource(source)
        result = SignResult(index.digest, "", key.public.key_id, claim)
        as_referrer = _registry_has_referrers_api(location, transports, index)
        superseded: list[Manifest] = []
        for subject in _subjects(source, index, recursive):
            payload = simple_signing_payload(subject.digest, claim)
            entry = SignatureEntry(
                payload, base64.b64encode(key.sign(payload)).decode(), dict(annotations or {})
            )
            entries: list[SignatureEntry] = []
            for _, existing in signature_manifests(source, subject.digest)[:1]:
                entries = [read_entry(source, layer) for layer in signature_entries(existing)]
                superseded.append(existing)
            manifest, config = signature_manifest([*entries, entry])
            blobs = {manifest.config.digest: config} if manifest.config else {}
            blobs.update({e.descriptor().digest: e.payload for e in [*entries, entry]})
            tag = cosign_signature_tag(subject.digest)
            overlay.add(manifest, blobs, tag)
            if as_referrer:
                # The same signatures, also as an OCI 1.1 referrer where the registry has the
                # API (cosign's OCI 1.1 mode); verifiers read both and count each key once.
                referrer, _ = signature_manifest([*entries, entry], subject.descriptor())
                overlay.add_referrer(subject.digest, referrer, blobs)
            result.signed.append(subject.digest)
            result.tags.append(tag)
        target_location = _as_target(location)
        target = transports.open_target(target_location)
        copied = copy_service.copy(overlay, target)
        result.target = copied.target
        if isinstance(target, (LayoutTarget, MemoryTarget)):
            _drop_superseded(target, superseded, overlay)
    finally:
        source.close()
    return result


def _drop_superseded(
    target: LayoutTarget | MemoryTarget, old: list[Manifest], new: OverlaySource
) -> None:
    """In a layout, the signature manifests just replaced are garbage: remove them.

    Their configs go too; payload layers are reused by the new manifests and stay.
    """
    kept = new.written_blobs()
    for manifest in old:
        for digest in (manifest.digest, manifest.config.digest if manifest.config else None):
            if digest is not None and digest not in kept:
                target.remove_blob(digest)


def _registry_has_referrers_api(
    location: Location, transports: Transports, index: Manifest
) -> bool:
    if location.reference is None:
        return False
    client = transports.client(location.reference.registry)
    return client.referrers(location.reference.repository, index.digest) is not None


def _as_target(location: Location) -> Location:
    """Write back where the artifact is: a registry tag (never a digest), a layout, an archive."""
    from dataclasses import replace

    if location.reference is not None and location.reference.digest is not None:
        return replace(location, reference=location.reference.with_digest(None))
    return location
