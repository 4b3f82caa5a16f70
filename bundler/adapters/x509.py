"""X.509 paths for certificate-based signatures: a leaf, the chain it came with, trusted roots.

The path is built by hand over a handful of certificates (a signature's chain and a policy's
CAs), because what is checked is code signing, not a TLS server: every certificate on the path
is valid at the given time (the Rekor SET's time for keyless signatures), each issuer is a CA
(basicConstraints, keyCertSign, path length) whose key made the signature below it, the leaf is
not a CA and may sign (digitalSignature; codeSigning when it restricts its use), and the path
ends at a trusted root. Identities come from the leaf's subjectAltName and, for Fulcio, its
OIDC issuer extension.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, ObjectIdentifier

from bundler.adapters.crypto import _public_key
from bundler.errors import BundlerError, ConfigError, KeyFileError, NotFoundError
from bundler.model.certified import MAX_CERTIFICATE_CHARS, CertifiedKey

MAX_PATH = 6  # certificates between the leaf and a root
MAX_CA_FILE_BYTES = 1024 * 1024
FULCIO_ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")  # the issuer's bytes as they are
FULCIO_ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")  # a DER UTF8String


def load_certificates(pem: bytes, origin: str) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle; ValueError-free: KeyFileError if there is none."""
    try:
        found = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise KeyFileError(f"{origin} holds no PEM certificate") from None
    return found


def certificate_der(pem: bytes) -> bytes | None:
    """The DER of the single certificate in ``pem``, or None when it is not exactly one."""
    try:
        found = x509.load_pem_x509_certificates(pem)
    except ValueError:
        return None
    return found[0].public_bytes(serialization.Encoding.DER) if len(found) == 1 else None


def _read_pem_file(path: Path, what: str, limit: int, unreadable: type[BundlerError]) -> bytes:
    """A PEM file of certificates the user named, read bounded.

    NotFoundError when it is not there (exit 3, as for every file); ``unreadable`` when it
    cannot be read or is over ``limit`` bytes.
    """
    from bundler.adapters.fsafe import read_regular

    try:
        data = read_regular(path, limit, what, follow=True)
    except FileNotFoundError:
        raise NotFoundError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise unreadable(f"{what}: cannot read {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise unreadable(f"{what}: {path} is more than {limit} bytes")
    return data


def read_ca_file(path: Path, what: str) -> list[x509.Certificate]:
    """The certificates of a CA file a policy names; ConfigError if unreadable or empty."""
    data = _read_pem_file(path, f"{what}: CA file", MAX_CA_FILE_BYTES, ConfigError)
    try:
        return load_certificates(data, f"{what} {path}")
    except KeyFileError as exc:
        raise ConfigError(str(exc)) from None


class X509Authority:
    """A :class:`~bundler.model.certified.CertificateAuthority` of root and intermediate CAs."""

    def __init__(
        self, roots: Sequence[x509.Certificate], intermediates: Sequence[x509.Certificate] = ()
    ) -> None:
        if not roots:
            raise ConfigError("a certificate authority needs at least one root certificate")
        self.roots = tuple(roots)
        self.intermediates = tuple(intermediates)

    @property
    def description(self) -> str:
        """The roots' subjects."""
        return "; ".join(root.subject.rfc4514_string() for root in self.roots)

    def certify(self, leaf_pem: str, chain_pem: str | None, at: datetime) -> CertifiedKey | str:
        """CertificateAuthority.certify."""
        if len(leaf_pem) > MAX_CERTIFICATE_CHARS or len(chain_pem or "") > MAX_CERTIFICATE_CHARS:
            return "the certificate or its chain is too large"
        try:
            leaves = x509.load_pem_x509_certificates(leaf_pem.encode())
            given = x509.load_pem_x509_certificates(chain_pem.encode()) if chain_pem else []
        except ValueError:
            return "the certificate or its chain is not PEM"
        if len(leaves) != 1:
            return f"the certificate annotation holds {len(leaves)} certificates, not 1"
        leaf = leaves[0]
        problem = _leaf_problem(leaf, at) or self._path_problem(
            leaf, [*given, *self.intermediates], at
        )
        if problem is not None:
            return problem
        try:
            key = _public_key(leaf.public_key(), "the signing certificate")
        except (KeyFileError, UnsupportedAlgorithm) as exc:
            return str(exc)
        return _certified(leaf, key)

    def _path_problem(
        self, leaf: x509.Certificate, pool: list[x509.Certificate], at: datetime
    ) -> str | None:
        current, below = leaf, 0  # CAs above the leaf so far
        for _ in range(MAX_PATH + 1):
            for root in self.roots:
                if _issued_by(current, root):
                    return _ca_problem(root, at, below, "the root")
            issuer = next((c for c in pool if c != current and _issued_by(current, c)), None)
            if issuer is None:
                name = current.subject.rfc4514_string() or "the signing certificate"
                return (
                    f"no trusted root or intermediate issued {name} "
                    f"(issuer {current.issuer.rfc4514_string()})"
                )
            problem = _ca_problem(issuer, at, below, "an intermediate")
            if problem is not None:
                return problem
            current, below = issuer, below + 1
        return f"the certificate path is longer than {MAX_PATH} certificates"


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _valid_at(cert: x509.Certificate, at: datetime) -> bool:
    return cert.not_valid_before_utc <= at <= cert.not_valid_after_utc


def _ca_problem(ca: x509.Certificate, at: datetime, below: int, what: str) -> str | None:
    name = ca.subject.rfc4514_string()
    if not _valid_at(ca, at):
        return f"{what} {name} was not valid at {at.isoformat()}"
    try:
        basic = ca.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value
    except x509.ExtensionNotFound:
        return f"{what} {name} is not marked as a CA"
    assert isinstance(basic, x509.BasicConstraints)
    if not basic.ca:
        return f"{what} {name} is not a CA"
    if basic.path_length is not None and below > basic.path_length:
        return f"{what} {name} allows {basic.path_length} CAs below it, the path has {below}"
    try:
        usage = ca.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value
    except x509.ExtensionNotFound:
        return None
    assert isinstance(usage, x509.KeyUsage)
    return None if usage.key_cert_sign else f"{what} {name} may not sign certificates"


def _leaf_problem(leaf: x509.Certificate, at: datetime) -> str | None:
    if not _valid_at(leaf, at):
        return (
            f"the signing certificate was valid from {leaf.not_valid_before_utc.isoformat()} "
            f"to {leaf.not_valid_after_utc.isoformat()}, not at {at.isoformat()}"
        )
    extensions = leaf.extensions
    try:
        basic = extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value
        if isinstance(basic, x509.BasicConstraints) and basic.ca:
            return "the signing certificate is a CA certificate"
    except x509.ExtensionNotFound:
        pass
    try:
        usage = extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value
        if isinstance(usage, x509.KeyUsage) and not usage.digital_signature:
            return "the signing certificate may not make digital signatures"
    except x509.ExtensionNotFound:
        pass
    try:
        eku = extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE).value
    except x509.ExtensionNotFound:
        return None
    assert isinstance(eku, x509.ExtendedKeyUsage)
    allowed = {ExtendedKeyUsageOID.CODE_SIGNING, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
    if not allowed & set(eku):
        return "the signing certificate is not for code signing"
    return None


def _certified(leaf: x509.Certificate, key: object) -> CertifiedKey:
    from bundler.adapters.crypto import PublicKey

    assert isinstance(key, PublicKey)
    emails: list[str] = []
    hostnames: list[str] = []
    uris: list[str] = []
    try:
        san = leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        assert isinstance(san, x509.SubjectAlternativeName)
        emails = san.get_values_for_type(x509.RFC822Name)
        hostnames = san.get_values_for_type(x509.DNSName)
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        pass
    der = leaf.public_bytes(serialization.Encoding.DER)
    return CertifiedKey(
        key=key,
        der=der,
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        emails=tuple(emails),
        hostnames=tuple(hostnames),
        uris=tuple(uris),
        oidc_issuer=_oidc_issuer(leaf),
        fingerprint="sha256:" + hashlib.sha256(der).hexdigest(),
    )


def _oidc_issuer(leaf: x509.Certificate) -> str | None:
    """Fulcio's OIDC issuer extension: v2 (a DER UTF8String) first, else v1 (raw bytes)."""
    for oid in (FULCIO_ISSUER_V2, FULCIO_ISSUER_V1):
        try:
            value = leaf.extensions.get_extension_for_oid(oid).value
        except x509.ExtensionNotFound:
            continue
        raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
        if oid == FULCIO_ISSUER_V2:
            raw = _der_utf8(raw)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def _der_utf8(raw: bytes) -> bytes:
    """The content of a short DER UTF8String (tag 12); empty when it is not one."""
    if len(raw) < 2 or raw[0] != 0x0C:
        return b""
    length, start = raw[1], 2
    if length & 0x80:
        count = length & 0x7F
        if count > 2 or len(raw) < 2 + count:
            return b""
        length, start = int.from_bytes(raw[2 : 2 + count], "big"), 2 + count
    return raw[start : start + length] if len(raw) == start + length else b""


def signing_certificate(key_id: str, certificate: Path, chain: Path | None) -> dict[str, str]:
    """The annotations that carry a signing certificate and its chain, as cosign writes them.

    The certificate must be one PEM certificate for the signing key (``key_id``); the chain a
    PEM bundle. KeyFileError otherwise, NotFoundError-like OSErrors as KeyFileError too.
    """
    from bundler.model.certified import CERTIFICATE_ANNOTATION, CHAIN_ANNOTATION

    def read(path: Path) -> bytes:
        return _read_pem_file(path, "certificate", MAX_CERTIFICATE_CHARS, KeyFileError)

    pem = read(certificate)
    found = load_certificates(pem, str(certificate))
    if len(found) != 1:
        raise KeyFileError(f"{certificate} holds {len(found)} certificates; give the chain apart")
    leaf_key = _public_key(found[0].public_key(), str(certificate))
    if leaf_key.key_id != key_id:
        raise KeyFileError(
            f"{certificate} certifies key {leaf_key.key_id}, not the signing key {key_id}"
        )
    out = {CERTIFICATE_ANNOTATION: found[0].public_bytes(serialization.Encoding.PEM).decode()}
    if chain is not None:
        certs = load_certificates(read(chain), str(chain))
        out[CHAIN_ANNOTATION] = "".join(
            c.public_bytes(serialization.Encoding.PEM).decode() for c in certs
        )
    return out


def describe_certificate(pem: bytes, origin: str) -> dict[str, object]:
    """What a signing certificate says, for people: subject, issuer, identities, validity, key.

    Nothing is verified here; KeyFileError when ``pem`` is not one certificate.
    """
    found = load_certificates(pem, origin)
    if len(found) != 1:
        raise KeyFileError(f"{origin} holds {len(found)} certificates, not 1")
    leaf = found[0]
    certified = _certified(leaf, _public_key(leaf.public_key(), origin))
    return {
        "kind": "certificate",
        "subject": certified.subject,
        "issuer": certified.issuer,
        "emails": list(certified.emails),
        "hostnames": list(certified.hostnames),
        "uris": list(certified.uris),
        "oidcIssuer": certified.oidc_issuer,
        "notBefore": leaf.not_valid_before_utc.isoformat(),
        "notAfter": leaf.not_valid_after_utc.isoformat(),
        "fingerprint": certified.fingerprint,
        "keyId": certified.key.key_id,
    }
