"""Signatures made with a certificate: a corporate CA's (PKI) or Fulcio's (keyless, with Rekor).

cosign stores the signing certificate and its chain in the signature layer's annotations
(``dev.sigstore.cosign/certificate``, ``.../chain``) and, for keyless signing, the Rekor signed
entry timestamp (SET) in ``dev.sigstore.cosign/bundle``. A policy trusts an *authority*: CA
certificates (roots, intermediates), the identities it may certify (subject email, hostname,
SAN URI, and for Fulcio the OIDC issuer), and for keyless signatures the Rekor public key.

Checking needs no network. With a Rekor key, the SET proves when the signature was logged and
the certificate must be valid then (Fulcio certificates live for minutes); without one, the
certificate must be valid now. The X.509 path itself is checked by
:mod:`bundler.adapters.x509`, behind :class:`CertificateAuthority`.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from bundler.model.signature import Verifier, decode_signature

CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
REKOR_BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
MAX_CERTIFICATE_CHARS = 64 * 1024  # PEM of one certificate, or of a chain, in an annotation
MAX_BUNDLE_CHARS = 64 * 1024


@dataclass(frozen=True)
class CertifiedKey:
    """A leaf certificate whose path to a trusted root checked out, and what it certifies."""

    key: Verifier  # the certificate's public key
    der: bytes  # the certificate itself, to compare with what Rekor logged
    subject: str
    issuer: str
    emails: tuple[str, ...] = ()
    hostnames: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    oidc_issuer: str | None = None  # Fulcio's issuer extension
    fingerprint: str = ""  # "sha256:" + hex SHA-256 of the DER certificate


class CertificateAuthority(Protocol):
    """Trusted CA certificates; :mod:`bundler.adapters.x509` implements it."""

    @property
    def description(self) -> str:
        """The roots, as messages name them (their subjects)."""

    def certify(self, leaf_pem: str, chain_pem: str | None, at: datetime) -> CertifiedKey | str:
        """The leaf's certified key when a path to a root is valid at ``at``, else why not.

        The path may use the chain given with the signature and the authority's own
        intermediates; every certificate on it must be valid at ``at``, CAs must be CAs, and
        the leaf must be usable for code signing.
        """


@dataclass(frozen=True)
class Identity:
    """What a certificate must certify: every field given must match (``*`` globs allowed)."""

    email: str | None = None
    hostname: str | None = None
    uri: str | None = None

    def matched_by(self, certified: CertifiedKey) -> bool:
        """True when ``certified`` names each given field."""
        checks = (
            (self.email, certified.emails),
            (self.hostname, certified.hostnames),
            (self.uri, certified.uris),
        )
        return all(
            wanted is None or any(fnmatch.fnmatchcase(have, wanted) for have in found)
            for wanted, found in checks
        )

    def __str__(self) -> str:
        parts = [f"{k} {v}" for k, v in vars(self).items() if v is not None]
        return ", ".join(parts)


@dataclass(frozen=True)
class TrustedAuthority:
    """A CA the policy trusts for ``role``, for the ``identities`` it certifies.

    ``oidc_issuer`` (keyless) must match Fulcio's issuer extension; ``rekor`` (keyless, or a
    PKI that logs) makes a valid Rekor SET mandatory and its time the time of signing.
    """

    name: str
    role: str
    authority: CertificateAuthority
    identities: tuple[Identity, ...]
    oidc_issuer: str | None = None
    rekor: Verifier | None = None
    origin: str = field(default="", compare=False)


# ------------------------------------------------------------------------------ Rekor SET
@dataclass(frozen=True)
class LoggedEntry:
    """A Rekor SET that checked out: when the entry was integrated into the log."""

    integrated_time: datetime
    log_index: int


def check_rekor_set(
    bundle_json: str,
    rekor: Verifier,
    payload: bytes,
    signature_b64: str,
    certificate_der: bytes,
    certificate_of: CertificateReader,
) -> LoggedEntry | str:
    """The SET in a ``dev.sigstore.cosign/bundle`` annotation, checked offline, else why not.

    The SET is Rekor's signature over the canonical JSON of the entry (body, integratedTime,
    logID, logIndex); the body (a ``hashedrekord`` or ``rekord`` 0.0.1 entry) must name the
    SHA-256 of ``payload``, exactly ``signature_b64``'s bytes, and this certificate.
    """
    if len(bundle_json) > MAX_BUNDLE_CHARS:
        return "the Rekor bundle is too large"
    try:
        doc = json.loads(bundle_json)
        set_b64 = doc["SignedEntryTimestamp"]
        entry = doc["Payload"]
        body_b64, integrated, index, log_id = (
            entry["body"],
            entry["integratedTime"],
            entry["logIndex"],
            entry["logID"],
        )
        if not (
            isinstance(body_b64, str)
            and isinstance(log_id, str)
            and type(integrated) is int
            and type(index) is int
        ):
            return "the Rekor bundle's entry has fields of the wrong type"
        signed_entry = base64.b64decode(set_b64, validate=True)
        body = json.loads(base64.b64decode(body_b64, validate=True))
    except (ValueError, KeyError, TypeError, binascii.Error):
        return "the Rekor bundle is not a signed entry timestamp"
    canonical = json.dumps(
        {"body": body_b64, "integratedTime": integrated, "logID": log_id, "logIndex": index},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    if not rekor.verify(canonical, signed_entry):
        return "the Rekor SET is not signed by the trusted Rekor key"
    if rekor.key_id.removeprefix("sha256:") != log_id.lower():
        return "the Rekor SET names another log than the trusted Rekor key's"
    problem = _check_rekor_body(body, payload, signature_b64, certificate_der, certificate_of)
    if problem is not None:
        return problem
    return LoggedEntry(datetime.fromtimestamp(integrated, UTC), index)


class CertificateReader(Protocol):
    """Turns PEM text into DER certificates (None when it is not one)."""

    def __call__(self, pem: bytes) -> bytes | None:
        """The DER of the one certificate in ``pem``, or None."""


def _check_rekor_body(
    body: object,
    payload: bytes,
    signature_b64: str,
    certificate_der: bytes,
    certificate_of: CertificateReader,
) -> str | None:
    if not isinstance(body, dict) or body.get("apiVersion") != "0.0.1":
        return "the Rekor entry is not an 0.0.1 entry"
    if body.get("kind") not in ("hashedrekord", "rekord"):
        return f"the Rekor entry is a {body.get('kind')!r}, not a hashedrekord"
    spec = body.get("spec")
    if not isinstance(spec, dict):
        return "the Rekor entry has no spec"
    data, signature = spec.get("data"), spec.get("signature")
    if not isinstance(data, dict) or not isinstance(signature, dict):
        return "the Rekor entry lacks its data or signature"
    digest = data.get("hash")
    if not isinstance(digest, dict) or digest.get("algorithm") != "sha256":
        return "the Rekor entry holds no SHA-256 of the payload"
    if digest.get("value") != hashlib.sha256(payload).hexdigest():
        return "the Rekor entry logged another payload"
    try:
        logged_signature = base64.b64decode(str(signature.get("content")), validate=True)
        ours = decode_signature(signature_b64)
        key = signature.get("publicKey")
        logged_pem = base64.b64decode(
            str(key.get("content") if isinstance(key, dict) else ""), validate=True
        )
    except (ValueError, binascii.Error):
        return "the Rekor entry's signature or key is not base64"
    if logged_signature != ours:
        return "the Rekor entry logged another signature"
    if certificate_of(logged_pem) != certificate_der:
        return "the Rekor entry logged another certificate"
    return None


def matched_identity(
    trusted: TrustedAuthority, certified: CertifiedKey
) -> tuple[Identity | None, str]:
    """The first of the authority's identities the certificate names, else None and why not."""
    if trusted.oidc_issuer is not None and certified.oidc_issuer != trusted.oidc_issuer:
        return None, (
            f"the certificate's OIDC issuer is {certified.oidc_issuer or 'none'}, "
            f"not {trusted.oidc_issuer}"
        )
    for identity in trusted.identities:
        if identity.matched_by(certified):
            return identity, ""
    names = [*certified.emails, *certified.hostnames, *certified.uris]
    return None, f"the certificate names {', '.join(names) or 'no identity'}, not one trusted"


def certified_name(trusted: TrustedAuthority, certified: CertifiedKey) -> str:
    """How a certified signer is named: the authority and the certified identity."""
    who: Sequence[str] = certified.emails or certified.uris or certified.hostnames
    return f"{trusted.name}:{who[0]}" if who else f"{trusted.name}:{certified.subject}"
