"""cosign's key-based "simple signing" format, byte for byte, and the check of one signature.

A signature is a layer of a small OCI image stored under the tag ``sha256-<hex>.sig`` next to
the signed manifest::

    manifest (application/vnd.oci.image.manifest.v1+json)
    ├── config  application/vnd.oci.image.config.v1+json: go-containerregistry's empty image
    │           config with rootfs.diff_ids = the layer digests (and one empty history entry each)
    └── layers  application/vnd.dev.cosign.simplesigning.v1+json, one per signature; the layer
                is the payload, its annotation dev.cosignproject.cosign/signature the base64
                signature over exactly those bytes

The payload names the signed manifest by digest::

    {"critical":{"identity":{"docker-reference":"<repository>"},
                 "image":{"docker-manifest-digest":"sha256:..."},
                 "type":"cosign container image signature"},"optional":null}

Everything is serialised as Go's encoding/json does it (struct fields in declaration order,
map keys sorted, no spaces, HTML characters escaped), so what we write is what cosign writes.
Checking follows containers/image: verify the exact payload bytes first, then parse those same
bytes strictly, then compare the digest, then the repository. Pure: no I/O, no crypto library.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bundler.errors import (
    DigestMismatchError,
    ManifestError,
    ReferenceFormatError,
    SizeMismatchError,
)
from bundler.model import mediatypes as mt
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest
from bundler.model.manifest import Manifest, load_json_strict, parse_manifest
from bundler.model.reference import Reference

SIMPLE_SIGNING_MEDIA_TYPE = mt.COSIGN_SIMPLESIGNING
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PAYLOAD_TYPE = "cosign container image signature"

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_SIGNATURE_B64_CHARS = 8 * 1024  # RSA-4096 is 684 characters, ECDSA P-256 about 96
MAX_SIGNATURES = 1000  # cosign refuses more layers than this on one signature image

# Why a signature was not accepted. Exactly one of these, or None for a good signature.
REASON_MEDIA_TYPE = "mediatype"  # the layer is not a simple-signing payload
REASON_SIGNATURE = "signature"  # the signature does not verify with the key
REASON_PAYLOAD = "payload"  # the (signed) payload is malformed or not a cosign image claim
REASON_DIGEST = "digest"  # the payload signs another manifest
REASON_IDENTITY = "identity"  # the payload names another repository
REASONS = (REASON_MEDIA_TYPE, REASON_SIGNATURE, REASON_PAYLOAD, REASON_DIGEST, REASON_IDENTITY)

_GO_ZERO_TIME = "0001-01-01T00:00:00Z"  # how Go marshals an unset time.Time


# ------------------------------------------------------------------- Go-compatible JSON
_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def _go_string(text: str) -> str:
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif code < 0x20 or ch in "<>&" or code in (0x2028, 0x2029):
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:  # not encodable as UTF-8: Go writes U+FFFD
            out.append("\\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _go_json(value: Any) -> str:
    """Serialise ``value`` as Go's encoding/json.Marshal does.

    Dicts keep their order (Go structs) unless they are wrapped as :class:`_GoMap` (Go maps:
    sorted keys).
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _go_string(value)
    if isinstance(value, _GoMap):
        return _go_json({k: value.items[k] for k in sorted(value.items)})
    if isinstance(value, dict):
        return "{" + ",".join(f"{_go_string(k)}:{_go_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_go_json(v) for v in value) + "]"
    raise TypeError(f"cannot serialise {type(value).__name__} as Go would")


@dataclass(frozen=True)
class _GoMap:
    items: dict[str, Any]


# ------------------------------------------------------------------------------ payload
def simple_signing_payload(
    digest: Digest, identity: str, optional: dict[str, Any] | None = None
) -> bytes:
    """The payload cosign signs for ``digest``, claimed for the repository ``identity``.

    cosign writes the bare repository (``registry/path``); a tag or digest is allowed, as
    containers/image writes ``repository:tag``. ``optional`` None is JSON null, as in cosign.
    """
    Reference.parse(identity, default_tag=False)  # what verifiers cannot parse, never sign
    doc = {
        "critical": {
            "identity": {"docker-reference": identity},
            "image": {"docker-manifest-digest": str(digest)},
            "type": PAYLOAD_TYPE,
        },
        "optional": None if optional is None else _GoMap(dict(optional)),
    }
    return _go_json(doc).encode()


@dataclass(frozen=True)
class Claim:
    """What a simple-signing payload says. Only meaningful once its signature verified."""

    digest: Digest
    identity: str
    type: str
    optional: dict[str, Any] | None


def _exact(value: Any, keys: set[str], what: str) -> dict[str, Any]:
    # containers/image parses the payload with exactly these fields, no more, no fewer.
    if not isinstance(value, dict):
        raise ManifestError(f"signature payload: {what} must be an object")
    if set(value) != keys:
        raise ManifestError(
            f"signature payload: {what} must have exactly the fields {sorted(keys)}, "
            f"has {sorted(value)}"
        )
    return value


def _check_finite(value: Any) -> None:
    # Python's json reads NaN and Infinity; Go's refuses them. Refuse them too.
    if isinstance(value, float) and not math.isfinite(value):
        raise ManifestError("signature payload holds a non-finite number")
    if isinstance(value, dict):
        for item in value.values():
            _check_finite(item)
    elif isinstance(value, list):
        for item in value:
            _check_finite(item)


# Complexity kept: the payload's fields checked in order, strictly, as containers/image does.
def parse_payload(raw: bytes) -> Claim:  # noqa: C901
    """Parse payload bytes strictly. Call it only on bytes whose signature verified."""
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise ManifestError(f"signature payload is {len(raw)} bytes, more than {MAX_PAYLOAD_BYTES}")
    # Go reads UTF-8 only; Python would also guess UTF-16/32 and skip a BOM. Same bytes, same
    # reading, for every verifier.
    if raw.startswith(b"\xef\xbb\xbf"):
        raise ManifestError("signature payload starts with a byte order mark")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError("signature payload is not UTF-8") from None
    try:
        doc = load_json_strict(raw, "signature payload")
    except RecursionError:
        raise ManifestError("signature payload is nested too deeply") from None
    _check_finite(doc)
    doc = _exact(doc, {"critical", "optional"}, "the payload")
    critical = _exact(doc["critical"], {"identity", "image", "type"}, "'critical'")
    image = _exact(critical["image"], {"docker-manifest-digest"}, "'critical.image'")
    identity = _exact(critical["identity"], {"docker-reference"}, "'critical.identity'")
    optional = doc["optional"]
    kind, digest_text, reference = (
        critical["type"],
        image["docker-manifest-digest"],
        identity["docker-reference"],
    )
    if not all(isinstance(v, str) for v in (kind, digest_text, reference)):
        raise ManifestError(
            "signature payload: type, docker-manifest-digest and docker-reference must be strings"
        )
    if optional is not None:
        if not isinstance(optional, dict):
            raise ManifestError("signature payload: 'optional' must be an object or null")
        creator, timestamp = optional.get("creator"), optional.get("timestamp")
        if creator is not None and not isinstance(creator, str):
            raise ManifestError("signature payload: optional.creator must be a string")
        if timestamp is not None and (
            isinstance(timestamp, bool)
            or not isinstance(timestamp, int | float)
            or (isinstance(timestamp, float) and not timestamp.is_integer())
        ):
            raise ManifestError("signature payload: optional.timestamp must be an integer")
    try:
        digest = Digest.parse(digest_text)
    except ReferenceFormatError as exc:
        raise ManifestError(f"signature payload: docker-manifest-digest: {exc}") from None
    return Claim(digest, reference, kind, optional)


# -------------------------------------------------------------------- signature manifest
def cosign_signature_tag(digest: Digest) -> str:
    """``sha256-<hex>.sig``: where cosign stores the signatures of ``digest``."""
    return f"{digest.tag_form()}.sig"


@dataclass(frozen=True)
class SignatureEntry:
    """One layer of a signature manifest: the payload bytes and the signature over them.

    ``annotations`` are the layer's other annotations (a Rekor bundle, a certificate, ...);
    the signature annotation itself comes from ``signature_b64``.
    """

    payload: bytes
    signature_b64: str
    annotations: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # No judgement of the signature here: an entry also carries layers read back from a
        # registry, which check_simple_signature judges. Only an ambiguous entry is refused.
        other = self.annotations.get(SIGNATURE_ANNOTATION)
        if other is not None and other != self.signature_b64:
            raise ManifestError("annotations carry a different signature than signature_b64")

    def layer_annotations(self) -> dict[str, str]:
        """The layer's annotations: the other annotations plus the base64 signature annotation."""
        return {**self.annotations, SIGNATURE_ANNOTATION: self.signature_b64}

    def descriptor(self) -> Descriptor:
        """The layer's descriptor: simple-signing media type, the payload's digest and size."""
        return Descriptor(
            SIMPLE_SIGNING_MEDIA_TYPE,
            Digest.of(self.payload),
            len(self.payload),
            self.layer_annotations(),
        )

    @classmethod
    def from_layer(cls, layer: Descriptor, payload: bytes) -> SignatureEntry:
        """Rebuild the entry of an existing signature layer from the layer's bytes."""
        if len(payload) != layer.size:
            raise SizeMismatchError(
                f"signature payload {layer.digest} is {len(payload)} bytes, not {layer.size}"
            )
        if not layer.digest.matches(payload):
            raise DigestMismatchError(f"signature payload does not hash to {layer.digest}")
        signature = layer.annotations.get(SIGNATURE_ANNOTATION)
        if signature is None:
            raise ManifestError(f"signature layer {layer.digest} has no {SIGNATURE_ANNOTATION}")
        others = {k: v for k, v in layer.annotations.items() if k != SIGNATURE_ANNOTATION}
        return cls(payload, signature, others)


def _go_descriptor(
    media_type: str, data_digest: Digest, size: int, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    # go-containerregistry's v1.Descriptor field order: mediaType, size, digest, annotations.
    out: dict[str, Any] = {"mediaType": media_type, "size": size, "digest": str(data_digest)}
    if annotations:
        out["annotations"] = _GoMap(annotations)
    return out


COSIGN_SIGNATURE_ARTIFACT_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"


def signature_manifest(
    entries: Sequence[SignatureEntry], subject: Descriptor | None = None
) -> tuple[Manifest, bytes]:
    """The signature image holding ``entries`` in order, as cosign lays it out.

    Returns the manifest and its config blob. An entry equal to an earlier one is not added
    again, so re-signing with the same bytes changes nothing. With ``subject``, the manifest is an
    OCI 1.1 referrer of it (cosign's artifactType), for registries with the referrers API.
    """
    unique: list[SignatureEntry] = []
    for entry in entries:
        if entry not in unique:
            unique.append(entry)
    if not unique:
        raise ManifestError("a signature manifest needs at least one signature")
    if len(unique) > MAX_SIGNATURES:
        raise ManifestError(f"more than {MAX_SIGNATURES} signatures on one manifest")
    layers = [entry.descriptor() for entry in unique]
    config = _go_json(
        {  # v1.ConfigFile of go-containerregistry's empty image, after Append
            "architecture": "",
            "created": _GO_ZERO_TIME,
            "history": [{"created": _GO_ZERO_TIME} for _ in layers],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [str(layer.digest) for layer in layers]},
            "config": {},
        }
    ).encode()
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": _go_descriptor(mt.OCI_CONFIG, Digest.of(config), len(config)),
        "layers": [_go_descriptor(d.media_type, d.digest, d.size, d.annotations) for d in layers],
    }
    if subject is not None:
        doc["artifactType"] = COSIGN_SIGNATURE_ARTIFACT_TYPE
        doc["subject"] = _go_descriptor(subject.media_type, subject.digest, subject.size)
    return parse_manifest(_go_json(doc).encode(), media_type=mt.OCI_MANIFEST), config


def signature_entries(manifest: Manifest) -> list[Descriptor]:
    """The simple-signing layers of a signature manifest, in order."""
    if manifest.is_index:
        raise ManifestError(f"signature manifest {manifest.digest} is an index")
    found = [d for d in manifest.layers if d.media_type == SIMPLE_SIGNING_MEDIA_TYPE]
    if len(found) > MAX_SIGNATURES:
        raise ManifestError(
            f"signature manifest {manifest.digest} has {len(found)} signatures, "
            f"more than {MAX_SIGNATURES}"
        )
    return found


def decode_signature(signature_b64: str) -> bytes:
    """The signature bytes of cosign's base64 annotation, decoded as Go decodes it.

    Line breaks are skipped (some signers wrap the base64); any other stray character is refused.
    """
    return base64.b64decode(signature_b64.replace("\r", "").replace("\n", ""), validate=True)


# ------------------------------------------------------------------------------ checking
class Verifier(Protocol):
    """A public key as signature and policy checks see it; implemented in adapters.crypto."""

    @property
    def key_id(self) -> str:
        """``sha256:`` and the hex SHA-256 of the key's DER SubjectPublicKeyInfo."""

    def verify(self, payload: bytes, signature: bytes) -> bool:
        """True when ``signature`` is this key's over exactly ``payload``; never raises."""


def same_repository(claimed: str, expected: str) -> bool:
    """containers/image's matchRepository: equal registry/repository after normalisation.

    A tag or digest in the claimed identity does not matter.
    """
    try:
        claimed_ref = Reference.parse(claimed, default_tag=False)
        expected_ref = Reference.parse(expected, default_tag=False)
    except ReferenceFormatError:
        return False
    return claimed_ref.name == expected_ref.name


# Complexity kept: the numbered steps of one check; splitting would scatter them.
def check_simple_signature(  # noqa: C901
    media_type: str,
    payload: bytes,
    signature_b64: str,
    key: Verifier,
    expected_digest: Digest,
    expected_identity: str | None,
) -> str | None:
    """None when ``key`` signed ``payload`` for ``expected_digest``, else one of :data:`REASONS`.

    None means ``key`` signed ``payload`` and the payload claims ``expected_digest`` (and, when
    given, the repository of ``expected_identity``).

    ``expected_identity`` must parse as a reference (ReferenceFormatError otherwise): it is the
    verifier's own configuration, not untrusted input.
    """
    if expected_identity is not None:
        Reference.parse(expected_identity, default_tag=False)
    # 1. Only simple-signing layers are signatures, whatever annotations others carry.
    if media_type != SIMPLE_SIGNING_MEDIA_TYPE:
        return REASON_MEDIA_TYPE
    if len(payload) > MAX_PAYLOAD_BYTES:
        return REASON_PAYLOAD
    # 2. The signature over the exact bytes, before a byte of them is parsed.
    if not signature_b64 or len(signature_b64) > MAX_SIGNATURE_B64_CHARS:
        return REASON_SIGNATURE
    try:
        signature = decode_signature(signature_b64)
    except (binascii.Error, ValueError):
        return REASON_SIGNATURE
    if not signature or not key.verify(payload, signature):
        return REASON_SIGNATURE
    # 3. Parse those same bytes: a cosign image claim for the manifest we hold.
    try:
        claim = parse_payload(payload)
    except ManifestError:
        return REASON_PAYLOAD
    if claim.type != PAYLOAD_TYPE:
        return REASON_PAYLOAD
    if claim.digest != expected_digest:
        return REASON_DIGEST
    # 4. The repository it was signed for, when the verifier asks for one.
    if expected_identity is not None and not same_repository(claim.identity, expected_identity):
        return REASON_IDENTITY
    return None
