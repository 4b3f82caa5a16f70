"""Signing keys in cosign's formats: the one module that touches cryptography and PyNaCl.

Formats, as cosign and containers/image read and write them:

* Public keys: SubjectPublicKeyInfo PEM (``PUBLIC KEY``). A key's id is ``sha256:`` + the hex
  SHA-256 of its DER SubjectPublicKeyInfo (re-encoded canonically, so one key has one id).
* Private keys: PEM ``ENCRYPTED COSIGN PRIVATE KEY`` (``ENCRYPTED SIGSTORE PRIVATE KEY`` is read
  too) around go-securesystemslib's ``encrypted`` JSON: scrypt derives a 32-byte key from the
  passphrase, nacl/secretbox seals the PKCS#8 DER of the key. We write scrypt N=32768, r=8, p=1
  (securesystemslib's "legacy" strength) because skopeo 1.9 reads nothing else.
* Signatures: ECDSA (P-256 and P-384) as ASN.1 DER over SHA-256, RSA as PKCS#1 v1.5 over
  SHA-256, Ed25519 pure. containers/image hard-codes SHA-256 and pure Ed25519 when it verifies
  a sigstore signature, so these are the choices a skopeo/podman ``sigstoreSigned`` policy checks.
  (cosign v3 signs with SHA-384 for P-384 and Ed25519ph for Ed25519 keys by default; such
  signatures are not accepted here, which matches containers/image.)

Private keys never appear in ``repr`` and are written to disk only encrypted, mode 0600.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import nacl.exceptions
import nacl.secret
import nacl.utils
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from bundler.adapters.fsafe import read_regular
from bundler.errors import (
    KeyFileError,
    NotFoundError,
    TransportError,
    UnsafeArchiveError,
    UsageError,
)

ALGORITHMS = ("ecdsa-p256", "ed25519")  # what `keys generate` makes; ECDSA P-256 is cosign's
LOADABLE_ALGORITHMS = ("ecdsa-p256", "ecdsa-p384", "ed25519", "rsa")

COSIGN_PRIVATE_KEY_LABEL = "ENCRYPTED COSIGN PRIVATE KEY"
SIGSTORE_PRIVATE_KEY_LABEL = "ENCRYPTED SIGSTORE PRIVATE KEY"
PUBLIC_KEY_LABEL = "PUBLIC KEY"
_PRIVATE_KEY_LABELS = (COSIGN_PRIVATE_KEY_LABEL, SIGSTORE_PRIVATE_KEY_LABEL)
_PLAIN_PRIVATE_KEY_LABELS = (
    "PRIVATE KEY",
    "EC PRIVATE KEY",
    "RSA PRIVATE KEY",
    "OPENSSH PRIVATE KEY",
    "ENCRYPTED PRIVATE KEY",
)

SCRYPT_N = 32768
SCRYPT_R = 8
SCRYPT_P = 1
# scrypt needs 128 * r * N bytes: N = 2**20 is 1 GiB. A key file must not make us allocate more.
MAX_SCRYPT_N = 2**20
SALT_BYTES = 32
MIN_RSA_BITS = 2048
MAX_KEY_FILE_BYTES = 64 * 1024
MAX_PASSPHRASE_FILE_BYTES = 64 * 1024

_KDF_NAME = "scrypt"
_CIPHER_NAME = "nacl/secretbox"
_PEM_RE = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n([A-Za-z0-9+/=\r\n]*?)-----END ([A-Z0-9 ]+)-----"
)

_PublicKeyObject = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey
_PrivateKeyObject = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


# ------------------------------------------------------------------------------ public keys
@dataclass(frozen=True)
class PublicKey:
    """A loaded public key: algorithm, SubjectPublicKeyInfo PEM, and ``key_id``.

    It is a :class:`~bundler.model.policy.Verifier`; equality compares algorithm, PEM and id.
    """

    algorithm: str  # one of LOADABLE_ALGORITHMS
    pem: bytes  # SubjectPublicKeyInfo PEM
    key_id: str  # "sha256:" + hex SHA-256 of the DER SubjectPublicKeyInfo
    _key: _PublicKeyObject = field(repr=False, compare=False)

    def verify(self, payload: bytes, signature: bytes) -> bool:
        """True when ``signature`` is this key's over exactly ``payload``.

        Never raises on a bad or malformed signature: the answer is simply False.
        """
        try:
            if isinstance(self._key, ec.EllipticCurvePublicKey):
                self._key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
            elif isinstance(self._key, ed25519.Ed25519PublicKey):
                self._key.verify(signature, payload)
            else:
                self._key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            return False
        return True


def _algorithm_of(key: _PublicKeyObject, origin: str) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1):
            return "ecdsa-p256"
        if isinstance(key.curve, ec.SECP384R1):
            return "ecdsa-p384"
        raise KeyFileError(f"{origin}: ECDSA curve {key.curve.name} is not supported")
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519"
    if key.key_size < MIN_RSA_BITS:
        raise KeyFileError(f"{origin}: RSA keys under {MIN_RSA_BITS} bits are not supported")
    return "rsa"


def _public_key(key: object, origin: str) -> PublicKey:
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
        raise KeyFileError(
            f"{origin}: unsupported key type; supported: {', '.join(LOADABLE_ALGORITHMS)}"
        )
    algorithm = _algorithm_of(key, origin)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = key.public_bytes(serialization.Encoding.DER, spki)
    pem = key.public_bytes(serialization.Encoding.PEM, spki)
    return PublicKey(algorithm, pem, "sha256:" + hashlib.sha256(der).hexdigest(), key)


# ----------------------------------------------------------------------------- signing keys
class SigningKey(Protocol):
    """What signs: a decrypted key file (:class:`PrivateKey`) or a key on a PKCS#11 token.

    ``sign`` gives the signature cosign would make with that key over ``payload``: ASN.1 DER
    ECDSA or RSA PKCS#1 v1.5 over SHA-256, or pure Ed25519; ``public.verify`` accepts it.
    """

    @property
    def public(self) -> PublicKey:
        """The key's public half (algorithm, PEM, key id)."""
        ...

    @property
    def algorithm(self) -> str:
        """One of LOADABLE_ALGORITHMS."""
        ...

    def sign(self, payload: bytes) -> bytes:
        """A signature over exactly ``payload``."""
        ...


# DER of the EC_PARAMS (an ASN.1 OBJECT IDENTIFIER, or RFC 8410's printable curve name for
# Edwards keys) that tokens store beside EC keys, and what each is here.
EC_PARAMS_P256 = bytes.fromhex("06082a8648ce3d030107")  # prime256v1 / secp256r1
EC_PARAMS_P384 = bytes.fromhex("06052b81040022")  # secp384r1
EC_PARAMS_ED25519 = bytes.fromhex("06032b6570")  # id-Ed25519
_EC_PARAMS_ED25519_NAME = b"\x13\x0cedwards25519"
_TOKEN_CURVES: dict[bytes, ec.EllipticCurve] = {
    EC_PARAMS_P256: ec.SECP256R1(),
    EC_PARAMS_P384: ec.SECP384R1(),
}
_ECDSA_SIZES = {"ecdsa-p256": 32, "ecdsa-p384": 48}


def _der_octet_string(data: bytes) -> bytes | None:
    """The content of one DER OCTET STRING that is all of ``data``, else None."""
    if len(data) < 2 or data[0] != 0x04:
        return None
    length, start = data[1], 2
    if length & 0x80:
        count = length & 0x7F
        if count not in (1, 2) or len(data) < 2 + count:
            return None
        length, start = int.from_bytes(data[2 : 2 + count], "big"), 2 + count
    return data[start:] if len(data) - start == length else None


def token_public_key(ec_params: bytes, ec_point: bytes, origin: str) -> PublicKey:
    """The public key of a token's EC or Edwards key object from its EC_PARAMS and EC_POINT.

    EC_POINT is a DER OCTET STRING around the point, as PKCS#11 says; some tokens give the bare
    point, which is read too. KeyFileError for a curve that is not P-256, P-384 or Ed25519.
    """
    wrapped = _der_octet_string(ec_point)
    key: _PublicKeyObject
    try:
        if ec_params in (EC_PARAMS_ED25519, _EC_PARAMS_ED25519_NAME):
            raw = wrapped if wrapped is not None and len(wrapped) == 32 else ec_point
            key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
        elif ec_params in _TOKEN_CURVES:
            curve = _TOKEN_CURVES[ec_params]
            size = 1 + 2 * ((curve.key_size + 7) // 8)
            point = ec_point if len(ec_point) == size and ec_point[0] == 4 else wrapped
            key = ec.EllipticCurvePublicKey.from_encoded_point(curve, point or b"")
        else:
            raise KeyFileError(
                f"{origin}: the key's curve (EC_PARAMS {ec_params.hex()}) is not supported; "
                "use ECDSA P-256, P-384 or Ed25519"
            )
    except ValueError:
        raise KeyFileError(f"{origin}: the token's public key point is not valid") from None
    return _public_key(key, origin)


def ecdsa_der_signature(raw: bytes, algorithm: str) -> bytes:
    """PKCS#11 CKM_ECDSA's r || s as the ASN.1 DER ``SEQUENCE {r, s}`` cosign writes."""
    size = _ECDSA_SIZES[algorithm]
    if len(raw) != 2 * size:
        raise KeyFileError(
            f"the token returned a {len(raw)}-byte ECDSA signature; {algorithm} makes {2 * size}"
        )
    return encode_dss_signature(
        int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big")
    )


# ----------------------------------------------------------------------------- private keys
class PrivateKey:
    """A decrypted signing key. Its secret never leaves this module unencrypted."""

    __slots__ = ("_key", "algorithm", "public")

    def __init__(self, key: _PrivateKeyObject, origin: str) -> None:
        self._key = key
        self.public = _public_key(key.public_key(), origin)
        self.algorithm = self.public.algorithm

    def sign(self, payload: bytes) -> bytes:
        """A signature over ``payload``: ECDSA or RSA PKCS#1 v1.5 over SHA-256, or plain Ed25519."""
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            return self._key.sign(payload, ec.ECDSA(hashes.SHA256()))
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            return self._key.sign(payload)
        return self._key.sign(payload, padding.PKCS1v15(), hashes.SHA256())

    def __repr__(self) -> str:
        return f"PrivateKey({self.algorithm}, {self.public.key_id})"


def generate_key(algorithm: str = "ecdsa-p256") -> PrivateKey:
    """A new signing key: ``ecdsa-p256`` (cosign's default) or ``ed25519``; else UsageError."""
    key: _PrivateKeyObject
    if algorithm == "ecdsa-p256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise UsageError(
            f"cannot generate {algorithm!r} keys; choose one of {', '.join(ALGORITHMS)}"
        )
    return PrivateKey(key, "generated key")


# ------------------------------------------------------------------------------------ PEM
def _pem_block(data: bytes, origin: str) -> tuple[str, bytes]:
    """The one PEM block of a key file: its label and its decoded body."""
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{origin} is {len(data)} bytes, more than a key file can be")
    blocks = list(_PEM_RE.finditer(data))
    if not blocks:
        raise KeyFileError(f"{origin} is not a PEM file")
    if len(blocks) > 1:
        raise KeyFileError(f"{origin} holds {len(blocks)} PEM blocks; a key file holds one")
    match = blocks[0]
    label, end_label = match.group(1).decode(), match.group(3).decode()
    if label != end_label or (data[: match.start()] + data[match.end() :]).strip():
        raise KeyFileError(f"{origin} is not a well-formed PEM file")
    try:
        body = base64.b64decode(re.sub(rb"\s+", b"", match.group(2)), validate=True)
    except binascii.Error:
        raise KeyFileError(f"{origin}: the PEM body is not valid base64") from None
    return label, body


def pem_label(data: bytes, origin: str) -> str:
    """The label of a key file's PEM block (``PUBLIC KEY``, ``ENCRYPTED COSIGN PRIVATE KEY``)."""
    return _pem_block(data, origin)[0]


def _pem_encode(label: str, body: bytes) -> bytes:
    """Go's pem.EncodeToMemory: base64 lines of 64 characters."""
    text = base64.b64encode(body).decode()
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return (
        f"-----BEGIN {label}-----\n"
        + "".join(line + "\n" for line in lines)
        + f"-----END {label}-----\n"
    ).encode()


def load_public_key(pem: bytes, origin: str) -> PublicKey:
    """A SubjectPublicKeyInfo PEM public key (what ``cosign generate-key-pair`` writes)."""
    label, der = _pem_block(pem, origin)
    if label != PUBLIC_KEY_LABEL:
        raise KeyFileError(f"{origin} is a {label!r} PEM block, not a {PUBLIC_KEY_LABEL!r}")
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{origin} is not a usable public key: {exc}") from None
    return _public_key(key, origin)


# ----------------------------------------------------------------- encrypted private keys
def _b64field(doc: dict[str, Any], name: str, origin: str) -> bytes:
    value = doc.get(name)
    if not isinstance(value, str):
        raise KeyFileError(f"{origin}: encrypted key lacks a base64 {name!r}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):  # ValueError: a non-ASCII character
        raise KeyFileError(f"{origin}: {name!r} is not valid base64") from None


def _exact_object(value: Any, keys: set[str], what: str, origin: str) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != keys:
        raise KeyFileError(f"{origin}: {what} must be an object with exactly {sorted(keys)}")
    return value


def _strict_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise KeyFileError(f"duplicate key {key!r} in the encrypted key")
        out[key] = value
    return out


def _scrypt(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    maxmem = 128 * r * (n + 2) + 128 * r * p + 1024 * 1024
    return hashlib.scrypt(passphrase, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=32)


def encrypt_private_key(key: PrivateKey, passphrase: bytes) -> bytes:
    """The key as cosign's encrypted PEM, byte for byte as cosign and securesystemslib write it."""
    if not passphrase:
        raise UsageError("an empty passphrase would leave the private key unprotected")
    der = key._key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    salt = nacl.utils.random(SALT_BYTES)
    nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
    box = nacl.secret.SecretBox(_scrypt(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P))
    ciphertext = box.encrypt(der, nonce).ciphertext
    doc = {  # field order of securesystemslib's Go structs
        "kdf": {
            "name": _KDF_NAME,
            "params": {"N": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P},
            "salt": base64.b64encode(salt).decode(),
        },
        "cipher": {"name": _CIPHER_NAME, "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(ciphertext).decode(),
    }
    return _pem_encode(COSIGN_PRIVATE_KEY_LABEL, json.dumps(doc, separators=(",", ":")).encode())


# Complexity kept: the format's fields checked in order before any key material is used.
def decrypt_private_key(pem: bytes, passphrase: bytes, origin: str) -> PrivateKey:  # noqa: C901
    """Open a cosign/sigstore encrypted private key. Unencrypted keys are refused."""
    label, body = _pem_block(pem, origin)
    if label in _PLAIN_PRIVATE_KEY_LABELS:
        raise KeyFileError(
            f"{origin} is a {label!r} PEM block: private keys must be encrypted at rest, in "
            f"cosign's {COSIGN_PRIVATE_KEY_LABEL!r} format"
        )
    if label not in _PRIVATE_KEY_LABELS:
        raise KeyFileError(f"{origin} is a {label!r} PEM block, not an encrypted private key")
    try:
        doc = json.loads(body, object_pairs_hook=_strict_pairs)
    except KeyFileError as exc:
        raise KeyFileError(f"{origin}: {exc}") from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise KeyFileError(f"{origin}: the encrypted key is not valid JSON") from None
    doc = _exact_object(doc, {"kdf", "cipher", "ciphertext"}, "the encrypted key", origin)
    kdf = _exact_object(doc["kdf"], {"name", "params", "salt"}, "'kdf'", origin)
    cipher = _exact_object(doc["cipher"], {"name", "nonce"}, "'cipher'", origin)
    params = _exact_object(kdf["params"], {"N", "r", "p"}, "'kdf.params'", origin)
    if kdf["name"] != _KDF_NAME or cipher["name"] != _CIPHER_NAME:
        raise KeyFileError(
            f"{origin}: unsupported encryption {kdf['name']!r}/{cipher['name']!r}; "
            f"only {_KDF_NAME}/{_CIPHER_NAME} is read"
        )
    n, r, p = params["N"], params["r"], params["p"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, r, p)):
        raise KeyFileError(f"{origin}: scrypt parameters must be integers")
    # Checked before any work: a hostile file must not make us allocate gigabytes.
    if not 2 <= n <= MAX_SCRYPT_N or n & (n - 1):
        raise KeyFileError(f"{origin}: scrypt N={n} refused (a power of two up to {MAX_SCRYPT_N})")
    if (r, p) != (SCRYPT_R, SCRYPT_P):
        raise KeyFileError(f"{origin}: scrypt r={r}, p={p} refused (only r=8, p=1)")
    salt = _b64field(kdf, "salt", origin)
    nonce = _b64field(cipher, "nonce", origin)
    ciphertext = _b64field(doc, "ciphertext", origin)
    if not salt or len(salt) > 1024:
        raise KeyFileError(f"{origin}: the scrypt salt is {len(salt)} bytes")
    if len(nonce) != nacl.secret.SecretBox.NONCE_SIZE:
        raise KeyFileError(f"{origin}: the secretbox nonce is {len(nonce)} bytes, not 24")
    box = nacl.secret.SecretBox(_scrypt(passphrase, salt, n, r, p))
    try:
        der = box.decrypt(ciphertext, nonce)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise KeyFileError(f"{origin}: the passphrase does not decrypt it") from None
    try:  # PKCS#8, as cosign writes; SEC1/PKCS#1 ("traditional") as older tools wrote
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyFileError(f"{origin}: the decrypted content is not a private key") from None
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    ):
        raise KeyFileError(
            f"{origin}: unsupported key type; supported: {', '.join(LOADABLE_ALGORITHMS)}"
        )
    return PrivateKey(key, origin)


# ----------------------------------------------------------------------------- key files
def read_key_file(path: Path, limit: int = MAX_KEY_FILE_BYTES) -> bytes:
    """Up to ``limit + 1`` bytes of the key file ``path``, which must be a regular file.

    A FIFO, a device (``/dev/zero``) or a directory is refused without blocking or reading on
    (OSError, as an unreadable file is); a link the user named is followed. The extra byte lets
    the key parsers say "too large" without reading an endless file.
    """
    try:
        return read_regular(path, limit, "key file", follow=True)
    except UnsafeArchiveError as exc:
        raise OSError(
            errno.EINVAL, str(exc).removeprefix(f"key file {path} is "), str(path)
        ) from None


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        os.fchmod(fd, mode)  # exactly this mode, whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def public_key_path(prefix: Path) -> Path:
    """PREFIX.pub, checked to be new and in an existing directory (UsageError otherwise)."""
    pub_path = prefix.with_name(prefix.name + ".pub")
    if os.path.lexists(pub_path):
        raise UsageError(f"{pub_path} already exists; refusing to overwrite a key")
    if not prefix.parent.is_dir():
        raise UsageError(f"directory {prefix.parent} does not exist")
    return pub_path


def write_public_key(path: Path, public: PublicKey) -> None:
    """Write a public key PEM to the new file ``path`` (0644); never overwrites."""
    try:
        _write_new(path, public.pem, 0o644)
    except FileExistsError:
        raise UsageError(f"{path} already exists; refusing to overwrite a key") from None
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise TransportError(f"cannot write {path}: {exc.strerror}") from None


def write_key_pair(prefix: Path, key: PrivateKey, passphrase: bytes) -> tuple[Path, Path]:
    """Write PREFIX.key (encrypted, 0600) and PREFIX.pub (0644).

    Never overwrites; on any failure nothing this call created is left behind.
    """
    key_path = prefix.with_name(prefix.name + ".key")
    pub_path = prefix.with_name(prefix.name + ".pub")
    for path in (key_path, pub_path):
        if os.path.lexists(path):
            raise UsageError(f"{path} already exists; refusing to overwrite a key")
    if not prefix.parent.is_dir():
        raise UsageError(f"directory {prefix.parent} does not exist")
    encrypted = encrypt_private_key(key, passphrase)  # before touching the disk
    created: list[Path] = []
    try:
        for path, data, mode in ((key_path, encrypted, 0o600), (pub_path, key.public.pem, 0o644)):
            try:
                _write_new(path, data, mode)
            except FileExistsError:
                raise UsageError(f"{path} already exists; refusing to overwrite a key") from None
            created.append(path)
    except BaseException as exc:
        for path in created:
            path.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise TransportError(f"cannot write {prefix}.key/.pub: {exc.strerror}") from None
        raise
    return key_path, pub_path


def read_secret_line(path: Path, what: str, limit: int) -> bytes:
    """The first line of a secret's file (a passphrase, a PIN), without its line ending.

    NotFoundError when the file is not there; KeyFileError when it cannot be read or is over
    ``limit`` bytes.
    """
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise NotFoundError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise KeyFileError(f"{what} {path} is too large")
    return data.split(b"\n", 1)[0].removesuffix(b"\r")


def read_passphrase(
    *, file: Path | None, env: str | None, prompt: Callable[[], str] | None
) -> bytes:
    """The passphrase from exactly one source.

    That is a file (its first line), an environment variable (which must exist), or an
    interactive prompt. Never from an argument value.
    """
    given = [
        name
        for name, source in (("file", file), ("env", env), ("prompt", prompt))
        if source is not None
    ]
    if len(given) != 1:
        raise UsageError(
            "give the passphrase one way: --passphrase-file, --passphrase-env, or the prompt"
        )
    if file is not None:
        return read_secret_line(file, "passphrase file", MAX_PASSPHRASE_FILE_BYTES)
    if env is not None:
        if env not in os.environ:
            raise UsageError(f"environment variable {env} is not set")
        return os.fsencode(os.environ[env])
    assert prompt is not None
    return prompt().encode()
