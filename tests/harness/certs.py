"""Throw-away X.509 material for the loopback test registries.

Everything is generated with ``cryptography`` (EC P-256, SHA-256) and written
as PEM files into a caller-supplied directory.  Nothing here is meant to be
secure; the keys live only as long as the test run's temporary dir.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["ServerCerts", "SigningCert", "generate_server_certs", "generate_token_signing_cert"]

_VALIDITY = _dt.timedelta(days=7)


@dataclass(frozen=True)
class ServerCerts:
    """PEM paths of a test CA and a server certificate it signed."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class SigningCert:
    """PEM paths of a self-signed token-signing certificate and its key."""

    cert: Path
    key: Path


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bundler tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _validity() -> tuple[_dt.datetime, _dt.datetime]:
    now = _dt.datetime.now(_dt.UTC)
    return now - _dt.timedelta(minutes=5), now + _VALIDITY


def generate_server_certs(directory: Path | str) -> ServerCerts:
    """Create ``ca.crt``/``ca.key`` and ``server.crt``/``server.key`` in *directory*.

    The server certificate carries SAN ``DNS:localhost, IP:127.0.0.1`` and
    EKU serverAuth, so it validates for ``https://127.0.0.1:PORT`` as well as
    ``https://localhost:PORT``.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    not_before, not_after = _validity()

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("bundler test CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_name)
        .public_key(srv_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(srv_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    out = ServerCerts(
        ca_cert=d / "ca.crt",
        ca_key=d / "ca.key",
        server_cert=d / "server.crt",
        server_key=d / "server.key",
    )
    _write_cert(ca_cert, out.ca_cert)
    _write_key(ca_key, out.ca_key)
    _write_cert(srv_cert, out.server_cert)
    _write_key(srv_key, out.server_key)
    return out


def generate_token_signing_cert(directory: Path | str) -> SigningCert:
    """Create ``token-signing.crt``/``token-signing.key`` (self-signed, EC P-256).

    The registry trusts this certificate through ``auth.token.rootcertbundle``;
    the token server puts its DER form into the JWT ``x5c`` header.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    not_before, not_after = _validity()
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("bundler test token signer")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    out = SigningCert(cert=d / "token-signing.crt", key=d / "token-signing.key")
    _write_cert(cert, out.cert)
    _write_key(key, out.key)
    return out


@dataclass(frozen=True)
class CodeSigningPki:
    """A corporate PKI for signing: a root, an intermediate (its PEMs), and a way to certify
    a signing key for an email address (a leaf the intermediate issues)."""

    root: Path
    intermediate: Path
    intermediate_key: ec.EllipticCurvePrivateKey

    def certify(
        self, public_key_pem: Path, email: str, out: Path, *, code_signing: bool = True
    ) -> Path:
        """A leaf certificate for the key in ``public_key_pem``, naming ``email``; at ``out``."""
        public = serialization.load_pem_public_key(public_key_pem.read_bytes())
        assert isinstance(public, ec.EllipticCurvePublicKey)
        issuer = x509.load_pem_x509_certificate(self.intermediate.read_bytes())
        start, end = _validity()
        usage = (
            ExtendedKeyUsageOID.CODE_SIGNING if code_signing else ExtendedKeyUsageOID.SERVER_AUTH
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"signer {email}"))
            .issuer_name(issuer.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(signing=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
            .sign(self.intermediate_key, hashes.SHA256())
        )
        _write_cert(cert, out)
        return out


def _usage(*, signing: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signing,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=not signing,
        crl_sign=not signing,
        encipher_only=False,
        decipher_only=False,
    )


def generate_code_signing_pki(directory: Path | str) -> CodeSigningPki:
    """``root.crt`` and ``intermediate.crt`` in *directory*: a two-level CA for code signing."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    start, end = _validity()
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = (
        x509.CertificateBuilder()
        .subject_name(_name("bundler tests signing root"))
        .issuer_name(_name("bundler tests signing root"))
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_usage(signing=False), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    intermediate = (
        x509.CertificateBuilder()
        .subject_name(_name("bundler tests signing intermediate"))
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(signing=False), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    _write_cert(root, d / "root.crt")
    _write_cert(intermediate, d / "intermediate.crt")
    return CodeSigningPki(d / "root.crt", d / "intermediate.crt", key)
