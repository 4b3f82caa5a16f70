"""Keys and signatures in cosign's formats: round trips, and every way a key file can be bad."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from bundler.adapters import crypto
from bundler.adapters.crypto import (
    ALGORITHMS,
    decrypt_private_key,
    encrypt_private_key,
    generate_key,
    load_public_key,
    read_passphrase,
    write_key_pair,
)
from bundler.errors import KeyFileError, NotFoundError, TransportError, UsageError

PAYLOAD = b'{"critical":{},"optional":null}'


def _envelope(pem: bytes) -> dict[str, object]:
    body = b"".join(pem.strip().splitlines()[1:-1])
    doc: dict[str, object] = json.loads(base64.b64decode(body))
    return doc


def _reseal(pem: bytes, doc: dict[str, object]) -> bytes:
    label = pem.splitlines()[0].decode().removeprefix("-----BEGIN ").removesuffix("-----")
    return crypto._pem_encode(label, json.dumps(doc, separators=(",", ":")).encode())


# ------------------------------------------------------------------------ sign and verify
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_sign_verify_round_trip(algorithm: str) -> None:
    key = generate_key(algorithm)
    assert key.algorithm == algorithm
    assert key.public.verify(PAYLOAD, key.sign(PAYLOAD))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_signature_by_another_key_fails(algorithm: str) -> None:
    signature = generate_key(algorithm).sign(PAYLOAD)
    assert not generate_key(algorithm).public.verify(PAYLOAD, signature)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_flipped_payload_byte_fails(algorithm: str) -> None:
    key = generate_key(algorithm)
    signature = key.sign(PAYLOAD)
    tampered = bytes([PAYLOAD[0] ^ 1]) + PAYLOAD[1:]
    assert not key.public.verify(tampered, signature)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("garbage", [b"", b"\x00", b"\x30\x06\x02\x01\x01\x02\x01\x01", b"x" * 64])
def test_malformed_signature_is_false_not_an_exception(algorithm: str, garbage: bytes) -> None:
    assert generate_key(algorithm).public.verify(PAYLOAD, garbage) is False


def test_ecdsa_signatures_are_der_over_sha256() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = generate_key("ecdsa-p256")
    signature = key.sign(PAYLOAD)
    assert signature[0] == 0x30  # ASN.1 SEQUENCE, as Go's ecdsa.SignASN1 writes
    public = key.public._key
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signature, PAYLOAD, ec.ECDSA(hashes.SHA256()))


def test_unknown_algorithm_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="ecdsa-p256"):
        generate_key("dsa")


def test_private_key_repr_shows_no_secret() -> None:
    key = generate_key()
    assert repr(key) == f"PrivateKey(ecdsa-p256, {key.public.key_id})"


# --------------------------------------------------------------------------- public keys
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_public_key_pem_round_trip_and_key_id_stable(algorithm: str) -> None:
    key = generate_key(algorithm)
    loaded = load_public_key(key.public.pem, "test.pub")
    assert loaded.key_id == key.public.key_id
    assert loaded.pem == key.public.pem
    assert loaded.pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    assert load_public_key(b"\n" + key.public.pem + b"\n\n", "test.pub").key_id == loaded.key_id


def test_key_id_is_sha256_of_the_der_spki(cosign_vectors: Path) -> None:
    import hashlib

    pem = (cosign_vectors / "containers-image" / "cosign.pub").read_bytes()
    der = base64.b64decode(b"".join(pem.strip().splitlines()[1:-1]))
    key = load_public_key(pem, "cosign.pub")
    assert key.algorithm == "ecdsa-p256"
    assert key.key_id == "sha256:" + hashlib.sha256(der).hexdigest()
    assert key.pem == pem  # cosign's PEM and ours are the same bytes


@pytest.mark.parametrize(
    "pem",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not a pem", id="not-pem"),
        pytest.param(b"-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n", id="bad-b64"),
        pytest.param(
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", id="not-spki"
        ),
        pytest.param(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", id="certificate"
        ),
        pytest.param(
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", id="mismatched-labels"
        ),
        pytest.param(b"x" * (crypto.MAX_KEY_FILE_BYTES + 1), id="oversize"),
    ],
)
def test_malformed_public_key_is_refused(pem: bytes) -> None:
    with pytest.raises(KeyFileError):
        load_public_key(pem, "bad.pub")


def test_two_pem_blocks_are_refused() -> None:
    pem = generate_key().public.pem
    with pytest.raises(KeyFileError, match="2 PEM blocks"):
        load_public_key(pem + pem, "two.pub")


def test_small_rsa_and_unsupported_curves_are_refused() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    small = rsa.generate_private_key(65537, 1024).public_key()
    with pytest.raises(KeyFileError, match="2048"):
        load_public_key(small.public_bytes(serialization.Encoding.PEM, spki), "rsa.pub")
    k1 = ec.generate_private_key(ec.SECP256K1()).public_key()
    with pytest.raises(KeyFileError, match="secp256k1"):
        load_public_key(k1.public_bytes(serialization.Encoding.PEM, spki), "k1.pub")


def test_rsa_and_p384_keys_users_already_have_load_and_verify() -> None:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    rsa_key = rsa.generate_private_key(65537, 2048)
    public = load_public_key(
        rsa_key.public_key().public_bytes(serialization.Encoding.PEM, spki), "rsa.pub"
    )
    assert public.algorithm == "rsa"
    assert public.verify(PAYLOAD, rsa_key.sign(PAYLOAD, padding.PKCS1v15(), hashes.SHA256()))
    p384 = ec.generate_private_key(ec.SECP384R1())
    public = load_public_key(
        p384.public_key().public_bytes(serialization.Encoding.PEM, spki), "p384.pub"
    )
    assert public.algorithm == "ecdsa-p384"
    assert public.verify(PAYLOAD, p384.sign(PAYLOAD, ec.ECDSA(hashes.SHA256())))


# -------------------------------------------------------------------- encrypted private keys
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_encrypt_decrypt_round_trip(algorithm: str) -> None:
    key = generate_key(algorithm)
    pem = encrypt_private_key(key, b"correct horse")
    opened = decrypt_private_key(pem, b"correct horse", "test.key")
    assert opened.algorithm == algorithm
    assert opened.public.key_id == key.public.key_id
    assert key.public.verify(PAYLOAD, opened.sign(PAYLOAD))


def test_encrypted_key_has_cosigns_label_fields_and_order() -> None:
    pem = encrypt_private_key(generate_key(), b"pw")
    lines = pem.decode().splitlines()
    assert lines[0] == "-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----"
    assert lines[-1] == "-----END ENCRYPTED COSIGN PRIVATE KEY-----"
    assert all(len(line) == 64 for line in lines[1:-2])  # Go's pem line length
    doc = _envelope(pem)
    assert list(doc) == ["kdf", "cipher", "ciphertext"]
    kdf, cipher = doc["kdf"], doc["cipher"]
    assert isinstance(kdf, dict) and isinstance(cipher, dict)
    assert list(kdf) == ["name", "params", "salt"]
    assert kdf["name"] == "scrypt"
    assert list(kdf["params"].items()) == [("N", 32768), ("r", 8), ("p", 1)]
    assert len(base64.b64decode(kdf["salt"])) == 32
    assert list(cipher) == ["name", "nonce"]
    assert cipher["name"] == "nacl/secretbox"
    assert len(base64.b64decode(cipher["nonce"])) == 24


def test_encrypted_key_json_matches_cosigns_byte_layout(cosign_vectors: Path) -> None:
    vector = (cosign_vectors / "cosign" / "pemcosignkey.pem").read_bytes()
    theirs, ours = _envelope(vector), _envelope(encrypt_private_key(generate_key(), b"pw"))

    def shape(doc: object) -> object:
        if isinstance(doc, dict):
            return [(k, shape(v)) for k, v in doc.items()]
        return type(doc).__name__

    assert shape(ours) == shape(theirs)
    # The JSON is compact, as Go's json.Marshal writes it.
    body = base64.b64decode(b"".join(vector.strip().splitlines()[1:-1]))
    assert body == json.dumps(theirs, separators=(",", ":")).encode()


def test_wrong_passphrase_is_a_key_file_error() -> None:
    pem = encrypt_private_key(generate_key(), b"right")
    with pytest.raises(KeyFileError, match="passphrase does not decrypt it"):
        decrypt_private_key(pem, b"wrong", "test.key")


def test_empty_passphrase_is_refused_when_writing() -> None:
    with pytest.raises(UsageError, match="empty passphrase"):
        encrypt_private_key(generate_key(), b"")


def test_sigstore_label_is_read() -> None:
    pem = encrypt_private_key(generate_key(), b"pw")
    relabelled = pem.replace(b"COSIGN", b"SIGSTORE")
    assert decrypt_private_key(relabelled, b"pw", "test.key").algorithm == "ecdsa-p256"


@pytest.mark.parametrize("n", [2**21, 2**30, 2**62])
def test_hostile_scrypt_n_is_refused_before_the_kdf_runs(
    n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """N=2**21 costs 2 GiB of memory: the parameter check refuses it before scrypt starts."""
    pem = encrypt_private_key(generate_key(), b"pw")
    doc = _envelope(pem)
    doc["kdf"]["params"]["N"] = n  # type: ignore[index]
    calls: list[int] = []

    def no_kdf(*args: object, **kwargs: object) -> bytes:
        calls.append(1)
        raise AssertionError("scrypt ran on hostile parameters")

    monkeypatch.setattr(hashlib, "scrypt", no_kdf)
    with pytest.raises(KeyFileError, match="scrypt N"):
        decrypt_private_key(_reseal(pem, doc), b"pw", "hostile.key")
    assert calls == []


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        (("kdf", "params", "N"), 32767, "scrypt N"),
        (("kdf", "params", "N"), 1, "scrypt N"),
        (("kdf", "params", "N"), True, "integers"),
        (("kdf", "params", "r"), 16, "r=16"),
        (("kdf", "params", "p"), 2, "p=2"),
        (("kdf", "name", None), "pbkdf2", "unsupported encryption"),
        (("cipher", "name", None), "aes-gcm", "unsupported encryption"),
        (("cipher", "nonce", None), base64.b64encode(b"short").decode(), "nonce"),
        (("cipher", "nonce", None), "***", "base64"),
        (("kdf", "salt", None), "", "salt"),
    ],
)
def test_tampered_envelope_is_refused(
    path: tuple[str, str, str | None], value: object, match: str
) -> None:
    pem = encrypt_private_key(generate_key(), b"pw")
    doc = _envelope(pem)
    target: dict[str, object] = doc[path[0]]  # type: ignore[assignment]
    if path[2] is None:
        target[path[1]] = value
    else:
        target[path[1]][path[2]] = value  # type: ignore[index]
    with pytest.raises(KeyFileError, match=match):
        decrypt_private_key(_reseal(pem, doc), b"pw", "tampered.key")


def test_tampered_ciphertext_reads_as_wrong_passphrase() -> None:
    pem = encrypt_private_key(generate_key(), b"pw")
    doc = _envelope(pem)
    raw = bytearray(base64.b64decode(doc["ciphertext"]))  # type: ignore[arg-type]
    raw[-1] ^= 1
    doc["ciphertext"] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(KeyFileError, match="passphrase does not decrypt it"):
        decrypt_private_key(_reseal(pem, doc), b"pw", "tampered.key")


def test_extra_or_duplicate_fields_are_refused() -> None:
    pem = encrypt_private_key(generate_key(), b"pw")
    doc = _envelope(pem)
    with pytest.raises(KeyFileError, match="exactly"):
        decrypt_private_key(_reseal(pem, {**doc, "extra": 1}), b"pw", "extra.key")
    body = json.dumps(doc, separators=(",", ":"))
    duplicated = body[:-1] + ',"ciphertext":"AAAA"}'
    with pytest.raises(KeyFileError, match="duplicate"):
        decrypt_private_key(
            crypto._pem_encode(crypto.COSIGN_PRIVATE_KEY_LABEL, duplicated.encode()), b"pw", "d"
        )


@pytest.mark.parametrize("label", ["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"])
def test_unencrypted_private_key_is_refused(label: str) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    fmt = (
        serialization.PrivateFormat.PKCS8
        if label == "PRIVATE KEY"
        else serialization.PrivateFormat.TraditionalOpenSSL
    )
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
        .replace(b"EC PRIVATE KEY", label.encode())
    )
    with pytest.raises(KeyFileError, match="encrypted at rest"):
        decrypt_private_key(pem, b"", "plain.key")


def test_public_key_is_not_a_private_key() -> None:
    with pytest.raises(KeyFileError, match="not an encrypted private key"):
        decrypt_private_key(generate_key().public.pem, b"pw", "k.pub")


def test_vector_key_decrypts_with_hello(cosign_vectors: Path) -> None:
    pem = (cosign_vectors / "cosign" / "pemcosignkey.pem").read_bytes()
    assert decrypt_private_key(pem, b"hello", "pemcosignkey.pem").algorithm == "ecdsa-p256"


# -------------------------------------------------------------------------------- key files
def test_write_key_pair_modes_and_contents(tmp_path: Path) -> None:
    key = generate_key()
    key_path, pub_path = write_key_pair(tmp_path / "cosign", key, b"pw")
    assert (key_path.name, pub_path.name) == ("cosign.key", "cosign.pub")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub_path.stat().st_mode) == 0o644
    assert decrypt_private_key(key_path.read_bytes(), b"pw", "k").public == key.public
    assert load_public_key(pub_path.read_bytes(), "p").key_id == key.public.key_id


def test_write_key_pair_mode_ignores_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        key_path, _ = write_key_pair(tmp_path / "k", generate_key(), b"pw")
    finally:
        os.umask(old)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


@pytest.mark.parametrize("existing", ["k.key", "k.pub"])
def test_write_key_pair_refuses_to_overwrite(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).write_bytes(b"precious")
    with pytest.raises(UsageError, match="already exists"):
        write_key_pair(tmp_path / "k", generate_key(), b"pw")
    assert (tmp_path / existing).read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing]


def test_write_key_pair_refuses_a_dangling_symlink(tmp_path: Path) -> None:
    (tmp_path / "k.key").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UsageError, match="already exists"):
        write_key_pair(tmp_path / "k", generate_key(), b"pw")
    assert not (tmp_path / "elsewhere").exists()


def test_write_key_pair_leaves_nothing_behind_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = crypto._write_new

    def failing(path: Path, data: bytes, mode: int) -> None:
        if path.suffix == ".pub":
            raise OSError(28, "No space left on device")
        real(path, data, mode)

    monkeypatch.setattr(crypto, "_write_new", failing)
    with pytest.raises(TransportError, match="No space left"):
        write_key_pair(tmp_path / "k", generate_key(), b"pw")
    assert list(tmp_path.iterdir()) == []


def test_write_key_pair_with_empty_passphrase_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        write_key_pair(tmp_path / "k", generate_key(), b"")
    assert list(tmp_path.iterdir()) == []


def test_write_key_pair_into_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        write_key_pair(tmp_path / "nope" / "k", generate_key(), b"pw")


# ------------------------------------------------------------------------------ passphrases
def test_passphrase_from_file_is_its_first_line(tmp_path: Path) -> None:
    path = tmp_path / "pass"
    path.write_bytes(b"s3cret\r\nsecond line\n")
    assert read_passphrase(file=path, env=None, prompt=None) == b"s3cret"
    path.write_bytes(b"no newline")
    assert read_passphrase(file=path, env=None, prompt=None) == b"no newline"


def test_passphrase_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUNDLER_TEST_PASS", "from env")
    assert read_passphrase(file=None, env="BUNDLER_TEST_PASS", prompt=None) == b"from env"
    monkeypatch.delenv("BUNDLER_TEST_PASS")
    with pytest.raises(UsageError, match="BUNDLER_TEST_PASS is not set"):
        read_passphrase(file=None, env="BUNDLER_TEST_PASS", prompt=None)


def test_passphrase_from_prompt() -> None:
    assert read_passphrase(file=None, env=None, prompt=lambda: "typed") == b"typed"


def test_passphrase_needs_exactly_one_source(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        read_passphrase(file=None, env=None, prompt=None)
    with pytest.raises(UsageError):
        read_passphrase(file=tmp_path / "p", env="X", prompt=None)


def test_missing_passphrase_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        read_passphrase(file=tmp_path / "missing", env=None, prompt=None)
