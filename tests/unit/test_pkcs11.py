"""PKCS#11 keys: RFC 7512 URIs, where the PIN and module come from, and real SoftHSM2 keys.

The token tests run in this process against one SoftHSM2 configuration made for this module
(the PKCS#11 library is loaded once per process, so its tokens are made before it loads).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from harness.softhsm import SoftHsm

from bundler.adapters import crypto
from bundler.adapters.pkcs11 import (
    MODULE_ENV,
    PIN_ENV,
    Pkcs11Uri,
    TokenAccess,
    generate_key_pair,
    module_path,
    open_key,
    parse_uri,
    user_pin,
)
from bundler.cli.common import PassphraseFlags, TokenFlags, signing_key
from bundler.errors import KeyFileError, NotFoundError, UsageError

PIN = "unit-Pin-40913"
SECRET = "uri-Secret-7731"


# ----------------------------------------------------------------------------------- URIs
def test_a_full_uri_parses_with_every_attribute_cosign_reads() -> None:
    uri = parse_uri(
        "pkcs11:token=my%20token;manufacturer=SoftHSM%20project;serial=0a1b;model=SoftHSM%20v2;"
        "slot-id=7;object=vendor%3bkey;id=%01%ff;type=private"
        "?module-path=/usr/lib/x%20y.so&pin-source=file:/run/pin&x-vendor=1"
    )
    assert uri == Pkcs11Uri(
        token="my token",
        manufacturer="SoftHSM project",
        serial="0a1b",
        model="SoftHSM v2",
        slot_id=7,
        object="vendor;key",
        id=b"\x01\xff",
        type="private",
        module_path="/usr/lib/x y.so",
        pin_source="file:/run/pin",
    )
    # display() quotes what would split it again, and round-trips
    assert parse_uri(uri.display()) == uri


def test_the_pin_value_is_read_but_never_displayed() -> None:
    uri = parse_uri(f"pkcs11:token=t;object=k?pin-value={SECRET}&module-path=/m.so")
    assert uri.pin_value == SECRET
    for shown in (uri.display(), str(uri), repr(uri)):
        assert SECRET not in shown
    assert uri.display() == "pkcs11:token=t;object=k?module-path=/m.so"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (f"pkcs11:token=t;objekt=k?pin-value={SECRET}", "'objekt'"),
        (f"pkcs11:token=t;token=u?pin-value={SECRET}", "appears twice"),
        (f"pkcs11:token=t;object=k?pin-value={SECRET}&pin-value=x", "appears twice"),
        (f"pkcs11:token=t;slot-id=one?pin-value={SECRET}", "slot-id"),
        (f"pkcs11:token=t;type=public?pin-value={SECRET}", "type=private"),
        (f"pkcs11:token=t;object?pin-value={SECRET}", "no value"),
        (f"pkcs11:token=t#frag?pin-value={SECRET}", "fragment"),
        (f"pkcs11:token=%ff?pin-value={SECRET}", "'token'"),
        (f"pkcs11:token=t?module-name=softhsm2&pin-value={SECRET}", "'module-name'"),
        ("file:/k.key", "pkcs11:"),
    ],
)
def test_malformed_uris_are_usage_errors_that_never_quote_the_pin(text: str, named: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_uri(text)
    assert named in str(caught.value)
    assert SECRET not in str(caught.value)


# ---------------------------------------------------------------------------------- PINs
def test_the_pin_comes_from_exactly_one_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PIN_ENV, raising=False)
    pin_file = tmp_path / "pin"
    pin_file.write_text("from-file\r\nsecond line\n")
    plain = parse_uri("pkcs11:token=t;object=k")
    assert user_pin(parse_uri("pkcs11:token=t?pin-value=in-uri"), TokenAccess(), "t") == "in-uri"
    assert user_pin(parse_uri(f"pkcs11:token=t?pin-source={pin_file}"), TokenAccess(), "t") == (
        "from-file"
    )
    assert (
        user_pin(parse_uri(f"pkcs11:token=t?pin-source=file://{pin_file}"), TokenAccess(), "t")
        == "from-file"
    )
    assert user_pin(plain, TokenAccess(pin_file=pin_file), "t") == "from-file"
    monkeypatch.setenv("MY_PIN", "from-var")
    assert user_pin(plain, TokenAccess(pin_env="MY_PIN"), "t") == "from-var"
    asked: list[str] = []

    def prompt(text: str) -> str:
        asked.append(text)
        return "typed"

    assert user_pin(plain, TokenAccess(prompt=prompt), "t") == "typed"
    assert asked == ["PIN for token t: "]
    monkeypatch.setenv(PIN_ENV, "cosign-var")  # cosign's variable comes before the prompt
    assert user_pin(plain, TokenAccess(prompt=prompt), "t") == "cosign-var"
    assert user_pin(plain, TokenAccess(pin_env="MY_PIN"), "t") == "from-var"
    assert asked == ["PIN for token t: "]


def test_two_pins_no_pin_or_a_missing_one_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PIN_ENV, raising=False)
    with pytest.raises(UsageError, match="one way"):
        user_pin(parse_uri(f"pkcs11:token=t?pin-value={SECRET}"), TokenAccess(pin_env="X"), "t")
    with pytest.raises(UsageError, match="no terminal") as caught:
        user_pin(parse_uri("pkcs11:token=t"), TokenAccess(), "t")
    assert "--pin-file" in str(caught.value) and PIN_ENV in str(caught.value)
    with pytest.raises(NotFoundError, match="does not exist"):  # a missing file: exit 3
        user_pin(parse_uri("pkcs11:token=t"), TokenAccess(pin_file=tmp_path / "none"), "t")
    with pytest.raises(UsageError, match="is not set"):
        user_pin(parse_uri("pkcs11:token=t"), TokenAccess(pin_env="BUNDLER_NO_SUCH_VAR"), "t")
    with pytest.raises(UsageError, match="empty"):
        user_pin(parse_uri("pkcs11:token=t"), TokenAccess(prompt=lambda _: ""), "t")
    with pytest.raises(UsageError, match="must be a file"):
        user_pin(parse_uri("pkcs11:token=t?pin-source=https://x/pin"), TokenAccess(), "t")


def test_the_module_comes_from_the_uri_the_option_or_cosigns_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "module.so"
    module.write_bytes(b"\x7fELF")
    monkeypatch.delenv(MODULE_ENV, raising=False)
    assert module_path(parse_uri(f"pkcs11:token=t?module-path={module}"), TokenAccess()) == module
    assert module_path(parse_uri("pkcs11:token=t"), TokenAccess(module=str(module))) == module
    monkeypatch.setenv(MODULE_ENV, str(module))
    assert module_path(parse_uri("pkcs11:token=t"), TokenAccess()) == module
    with pytest.raises(UsageError, match="differ"):
        module_path(
            parse_uri(f"pkcs11:token=t?module-path={module}"), TokenAccess(module="/other.so")
        )
    monkeypatch.delenv(MODULE_ENV)
    with pytest.raises(UsageError, match="--pkcs11-module"):
        module_path(parse_uri("pkcs11:token=t"), TokenAccess())
    with pytest.raises(NotFoundError, match="does not exist"):
        module_path(parse_uri("pkcs11:token=t"), TokenAccess(module=str(tmp_path / "gone.so")))


def test_options_of_the_other_kind_of_key_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--pin-file or --pin-env"):
        signing_key("pkcs11:token=t;object=k", PassphraseFlags(env="X"), TokenFlags())
    with pytest.raises(UsageError, match="are for pkcs11: keys"):
        signing_key(str(tmp_path / "k.key"), PassphraseFlags(), TokenFlags(pin_env="X"))


# ------------------------------------------------------------------------ encodings
def test_raw_r_s_becomes_the_der_signature_cryptography_makes() -> None:
    for curve, algorithm, size in (
        (ec.SECP256R1(), "ecdsa-p256", 32),
        (ec.SECP384R1(), "ecdsa-p384", 48),
    ):
        key = ec.generate_private_key(curve)
        der = key.sign(b"payload", ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        raw = r.to_bytes(size, "big") + s.to_bytes(size, "big")
        assert crypto.ecdsa_der_signature(raw, algorithm) == der
    with pytest.raises(KeyFileError, match="64"):
        crypto.ecdsa_der_signature(b"\x01" * 63, "ecdsa-p256")


def test_token_public_keys_are_read_from_der_or_bare_points() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    point = key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    expected = crypto.load_public_key(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "k",
    )
    for form in (bytes([4, len(point)]) + point, point):
        assert crypto.token_public_key(crypto.EC_PARAMS_P256, form, "t") == expected
    edwards = ed25519.Ed25519PrivateKey.generate().public_key()
    raw = edwards.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    for form in (bytes([4, 32]) + raw, raw):
        assert crypto.token_public_key(crypto.EC_PARAMS_ED25519, form, "t").algorithm == "ed25519"
    with pytest.raises(KeyFileError, match="not supported"):
        crypto.token_public_key(bytes.fromhex("06052b8104000a"), point, "t")  # secp256k1
    with pytest.raises(KeyFileError, match="not valid"):
        crypto.token_public_key(crypto.EC_PARAMS_P256, b"\x04\x03abc", "t")


# ------------------------------------------------------------------------ SoftHSM2 keys
@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    made = SoftHsm.make(tmp_path_factory.mktemp("softhsm"))
    if made is None:
        pytest.skip("softhsm2 is not installed (run scripts/setup.sh test as root)")
    pkcs11 = pytest.importorskip("pkcs11", reason="python-pkcs11 is not installed")
    made.init_token("unit", PIN)
    saved = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(made.conf)
    pkcs11.lib(made.module).reinitialize()  # SoftHSM2 reads its config when initialised
    yield made
    if saved is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = saved


def access(hsm: SoftHsm, pin: str = PIN) -> TokenAccess:
    return TokenAccess(module=hsm.module, prompt=lambda _: pin)


@pytest.mark.parametrize("algorithm", ["ecdsa-p256", "ed25519"])
def test_a_key_made_on_the_token_signs_what_its_exported_public_key_verifies(
    hsm: SoftHsm, tmp_path: Path, algorithm: str
) -> None:
    label = f"sign-{algorithm}"
    made, pub_path = generate_key_pair(
        parse_uri(f"pkcs11:token=unit;object={label}"), access(hsm), algorithm, tmp_path / "k"
    )
    made.close()
    exported = crypto.load_public_key(pub_path.read_bytes(), str(pub_path))
    key = open_key(parse_uri(f"pkcs11:token=unit;object={label}"), access(hsm))
    assert key.public == exported and key.algorithm == algorithm == exported.algorithm
    payload = b'{"critical":{"type":"cosign container image signature"}}'
    signature = key.sign(payload)
    assert exported.verify(payload, signature)
    assert not exported.verify(payload + b" ", signature)
    if algorithm == "ed25519":
        assert len(signature) == 64
    else:  # ASN.1 DER, as cosign writes: cryptography decodes it and checks it
        decode_dss_signature(signature)
        assert signature[0] == 0x30
        public = serialization.load_pem_public_key(pub_path.read_bytes())
        assert isinstance(public, ec.EllipticCurvePublicKey)
        public.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    assert PIN not in repr(key)
    key.close()


def test_a_wrong_pin_is_a_key_error_that_does_not_repeat_it(hsm: SoftHsm, tmp_path: Path) -> None:
    generate_key_pair(
        parse_uri("pkcs11:token=unit;object=pinned"), access(hsm), "ecdsa-p256", tmp_path / "k"
    )[0].close()
    wrong = "wrong-Pin-55555"
    with pytest.raises(KeyFileError, match="wrong") as caught:
        open_key(parse_uri("pkcs11:token=unit;object=pinned"), access(hsm, wrong))
    assert wrong not in str(caught.value) and PIN not in str(caught.value)
    with pytest.raises(KeyFileError, match="wrong") as in_uri:
        open_key(
            parse_uri(f"pkcs11:token=unit;object=pinned?pin-value={wrong}"),
            TokenAccess(module=hsm.module),
        )
    assert wrong not in str(in_uri.value)


def test_a_public_key_object_of_another_key_is_caught_before_a_signature_leaves(
    hsm: SoftHsm, tmp_path: Path
) -> None:
    from pkcs11 import Attribute, ObjectClass

    mine, _ = generate_key_pair(
        parse_uri("pkcs11:token=unit;object=mine;id=%a1"), access(hsm), "ecdsa-p256", tmp_path / "a"
    )
    theirs, _ = generate_key_pair(
        parse_uri("pkcs11:token=unit;object=theirs;id=%b1"),
        access(hsm),
        "ecdsa-p256",
        tmp_path / "b",
    )
    mine.close()
    theirs.close()
    lib = __import__("pkcs11").lib(hsm.module)
    with lib.get_token(token_label="unit").open(user_pin=PIN, rw=True) as session:
        other = session.get_key(object_class=ObjectClass.PUBLIC_KEY, id=b"\xb1")
        session.get_key(object_class=ObjectClass.PUBLIC_KEY, id=b"\xa1").destroy()
        session.create_object(
            {
                Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                Attribute.KEY_TYPE: other[Attribute.KEY_TYPE],
                Attribute.EC_PARAMS: other[Attribute.EC_PARAMS],
                Attribute.EC_POINT: other[Attribute.EC_POINT],
                Attribute.ID: b"\xa1",
                Attribute.LABEL: "mine",
                Attribute.TOKEN: True,
            }
        )
    key = open_key(parse_uri("pkcs11:token=unit;id=%a1"), access(hsm))
    with pytest.raises(KeyFileError, match="do not belong together"):
        key.sign(b"payload")
    key.close()


def test_keys_the_uri_does_not_single_out_are_refused(hsm: SoftHsm, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="names no key"):
        open_key(parse_uri("pkcs11:token=unit"), access(hsm))
    with pytest.raises(KeyFileError, match="no private key"):
        open_key(parse_uri("pkcs11:token=unit;object=never-made"), access(hsm))
    with pytest.raises(KeyFileError, match="no token matches") as caught:
        open_key(parse_uri("pkcs11:token=elsewhere;object=k"), access(hsm))
    assert "'unit'" in str(caught.value)
    with pytest.raises(UsageError, match="object=LABEL"):
        generate_key_pair(parse_uri("pkcs11:token=unit"), access(hsm), "ecdsa-p256", tmp_path / "x")
    with pytest.raises(UsageError, match="cannot generate"):
        generate_key_pair(
            parse_uri("pkcs11:token=unit;object=rsa"), access(hsm), "rsa", tmp_path / "x"
        )
    assert not (tmp_path / "x.pub").exists()


def test_the_library_opens_a_token_key_with_the_pin_it_is_given(
    hsm: SoftHsm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bundler import api

    made, pub_path = generate_key_pair(
        parse_uri("pkcs11:token=unit;object=library"), access(hsm), "ecdsa-p256", tmp_path / "k"
    )
    made.close()
    monkeypatch.setenv(PIN_ENV, "not-the-pin")  # the PIN given wins over cosign's variable
    key = api.load_token_key("pkcs11:token=unit;object=library", PIN, module=hsm.module)
    assert key.public == api.load_public_key_file(pub_path)
    assert key.public.verify(b"payload", key.sign(b"payload"))
    key.close()
    with pytest.raises(UsageError, match="one way"):
        api.load_token_key(f"pkcs11:token=unit;object=library?pin-value={PIN}", PIN, hsm.module)
