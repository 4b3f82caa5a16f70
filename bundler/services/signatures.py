"""Finding cosign signatures beside an artifact: the ``sha256-<hex>.sig`` tag and referrers."""

from __future__ import annotations

from bundler.adapters.base import Source
from bundler.adapters.stream import VerifiedStream, read_exact
from bundler.errors import ManifestError, NotFoundError
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest
from bundler.model.manifest import Manifest
from bundler.model.signature import (
    COSIGN_SIGNATURE_ARTIFACT_TYPE,
    SIGNATURE_ANNOTATION,
    SignatureEntry,
    cosign_signature_tag,
    signature_entries,
)
from bundler.services.trust import SignatureFact

MAX_PAYLOAD_BYTES = 64 * 1024


def signature_manifests(source: Source, subject: Digest) -> list[tuple[str, Manifest]]:
    """Signature manifests for ``subject``: under cosign's tag, then OCI referrers."""
    found: list[tuple[str, Manifest]] = []
    tag = cosign_signature_tag(subject)
    descriptor = source.find_tag(tag)
    if descriptor is not None:
        found.append((tag, source.fetch_manifest(descriptor)))
    for referrer in source.referrers(subject):
        if referrer.artifact_type not in (COSIGN_SIGNATURE_ARTIFACT_TYPE, None):
            continue
        manifest = source.fetch_manifest(referrer)
        if signature_entries(manifest) and all(m.digest != manifest.digest for _, m in found):
            found.append((f"referrer {referrer.digest.short()}", manifest))
    return found


def read_entry(source: Source, layer: Descriptor) -> SignatureEntry:
    """One signature layer with its payload bytes (bounded, digest-checked)."""
    if layer.size > MAX_PAYLOAD_BYTES:
        raise ManifestError(f"signature payload {layer.digest} is {layer.size} bytes")
    payload = read_exact(VerifiedStream(source.open_blob(layer), layer, source.name), layer.size)
    annotations = dict(layer.annotations)
    signature = annotations.pop(SIGNATURE_ANNOTATION, "")
    return SignatureEntry(payload, signature, annotations)


def signature_facts(source: Source, subject: Digest) -> list[SignatureFact]:
    """Every signature layer stored for ``subject`` (cosign tag and referrers), payloads read.

    Layers whose payload is missing are skipped; nothing is verified here.
    """
    facts: list[SignatureFact] = []
    for where, manifest in signature_manifests(source, subject):
        for number, layer in enumerate(signature_entries(manifest), start=1):
            try:
                entry = read_entry(source, layer)
            except NotFoundError:
                continue  # a payload that is not there cannot count; the others still may
            facts.append(
                SignatureFact(
                    layer.media_type, entry.payload, entry.signature_b64, f"{where} layer {number}"
                )
            )
    return facts
