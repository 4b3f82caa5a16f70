"""cosign's simple-signing payload and signature manifest, byte for byte."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from bundler.errors import (
    DigestMismatchError,
    ManifestError,
    ReferenceFormatError,
    SizeMismatchError,
)
from bundler.model import mediatypes as mt
from bundler.model.digest import Digest
from bundler.model.manifest import parse_manifest
from bundler.model.signature import (
    PAYLOAD_TYPE,
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING_MEDIA_TYPE,
    Claim,
    SignatureEntry,
    check_simple_signature,
    cosign_signature_tag,
    parse_payload,
    signature_entries,
    signature_manifest,
    simple_signing_payload,
)

DIGEST = Digest.parse("sha256:" + "ab" * 32)
OTHER_DIGEST = Digest.parse("sha256:" + "cd" * 32)
IDENTITY = "registry.example:5000/team/app"


class FakeKey:
    """A stand-in verifier: a "signature" is b"sig:" + payload."""

    key_id = "sha256:fake"

    def verify(self, payload: bytes, signature: bytes) -> bool:
        return signature == b"sig:" + payload


def fake_sign(payload: bytes) -> str:
    return base64.b64encode(b"sig:" + payload).decode()


# ------------------------------------------------------------------------- payload bytes
def test_payload_is_cosigns_exact_layout() -> None:
    assert simple_signing_payload(DIGEST, IDENTITY) == (
        b'{"critical":{"identity":{"docker-reference":"registry.example:5000/team/app"},'
        b'"image":{"docker-manifest-digest":"sha256:' + b"ab" * 32 + b'"},'
        b'"type":"cosign container image signature"},"optional":null}'
    )


def test_payload_with_optional_sorts_keys_and_escapes_like_go() -> None:
    payload = simple_signing_payload(DIGEST, IDENTITY, {"z": "1", "a": "<b>&\u2028\n"})
    assert payload.endswith(b'"optional":{"a":"\\u003cb\\u003e\\u0026\\u2028\\n","z":"1"}}')
    assert parse_payload(payload).optional == {"a": "<b>&\u2028\n", "z": "1"}


def test_payload_with_empty_optional_is_an_empty_object() -> None:
    assert simple_signing_payload(DIGEST, IDENTITY, {}).endswith(b'"optional":{}}')


def test_payload_refuses_an_identity_verifiers_cannot_parse() -> None:
    with pytest.raises(ReferenceFormatError):
        simple_signing_payload(DIGEST, "Not A Reference")


def test_payload_recreates_cosigns_own_output(cosign_vectors: Path) -> None:
    vectors = cosign_vectors / "containers-image" / "dir-img-cosign-valid"
    blob = (vectors / "signature-1").read_bytes()
    cosign_payload = base64.b64decode(json.loads(blob[len(b"\x00sigstore-json\n") :])["payload"])
    claim = parse_payload(cosign_payload)
    assert claim.digest == Digest.of((vectors / "manifest.json").read_bytes())

    ours = simple_signing_payload(claim.digest, claim.identity)

    assert ours == cosign_payload


def test_parse_payload_reads_what_we_write() -> None:
    assert parse_payload(simple_signing_payload(DIGEST, IDENTITY)) == Claim(
        DIGEST, IDENTITY, PAYLOAD_TYPE, None
    )


# ------------------------------------------------------------------------ strict parsing
def _doc(**critical_overrides: object) -> dict[str, object]:
    critical: dict[str, object] = {
        "identity": {"docker-reference": IDENTITY},
        "image": {"docker-manifest-digest": str(DIGEST)},
        "type": PAYLOAD_TYPE,
    }
    critical.update(critical_overrides)
    return {"critical": critical, "optional": None}


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(
            b'{"critical":{"identity":{"docker-reference":"a/b"},"image":'
            b'{"docker-manifest-digest":"sha256:' + b"ab" * 32 + b'"},"type":"x",'
            b'"type":"cosign container image signature"},"optional":null}',
            id="duplicate-key-type",
        ),
        pytest.param(
            b'{"critical":{},"critical":'
            + json.dumps(_doc()["critical"]).encode()
            + b',"optional":null}',
            id="duplicate-key-critical",
        ),
        pytest.param(json.dumps(_doc(type=7)).encode(), id="type-not-a-string"),
        pytest.param(
            json.dumps(_doc(image={"docker-manifest-digest": 5})).encode(), id="digest-not-a-string"
        ),
        pytest.param(
            json.dumps(_doc(image={"docker-manifest-digest": "sha256:12"})).encode(),
            id="digest-malformed",
        ),
        pytest.param(json.dumps(_doc(identity="a/b")).encode(), id="identity-not-an-object"),
        pytest.param(json.dumps(_doc(extra=1)).encode(), id="unknown-critical-field"),
        pytest.param(json.dumps({**_doc(), "more": 1}).encode(), id="unknown-top-field"),
        pytest.param(json.dumps({"critical": _doc()["critical"]}).encode(), id="optional-missing"),
        pytest.param(json.dumps({**_doc(), "optional": []}).encode(), id="optional-a-list"),
        pytest.param(
            json.dumps({**_doc(), "optional": {"timestamp": 1.5}}).encode(),
            id="timestamp-not-integer",
        ),
        pytest.param(
            json.dumps({**_doc(), "optional": {"creator": 1}}).encode(), id="creator-not-a-string"
        ),
        pytest.param(json.dumps({**_doc(), "optional": {"x": float("nan")}}).encode(), id="nan"),
        pytest.param(b"[]", id="not-an-object"),
        pytest.param(b"\xef\xbb\xbf" + json.dumps(_doc()).encode(), id="byte-order-mark"),
        pytest.param(json.dumps(_doc()).encode("utf-16"), id="utf-16"),
        pytest.param(b"[" * 60_000, id="deep-nesting"),
        pytest.param(b"[" * 100_000, id="oversize-nesting"),
        pytest.param(b'{"critical":' + b" " * 70_000 + b"}", id="oversize"),
        pytest.param(b"{", id="not-json"),
    ],
)
def test_parse_payload_refuses_malformed_payloads(raw: bytes) -> None:
    with pytest.raises(ManifestError):
        parse_payload(raw)


def test_parse_payload_accepts_containers_image_optional_fields() -> None:
    raw = json.dumps({**_doc(), "optional": {"creator": "c/i", "timestamp": 1657296609}})
    assert parse_payload(raw.encode()).optional == {"creator": "c/i", "timestamp": 1657296609}


# ------------------------------------------------------------------- signature manifests
def test_signature_tag_is_cosigns() -> None:
    assert cosign_signature_tag(DIGEST) == "sha256-" + "ab" * 32 + ".sig"


def test_signature_manifest_is_laid_out_as_cosign_writes_it() -> None:
    payload = simple_signing_payload(DIGEST, IDENTITY)
    entry = SignatureEntry(payload, "c2ln")
    manifest, config = signature_manifest([entry])
    layer = Digest.of(payload)

    assert config == (
        b'{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{"created":'
        b'"0001-01-01T00:00:00Z"}],"os":"","rootfs":{"type":"layers","diff_ids":["'
        + str(layer).encode()
        + b'"]},"config":{}}'
    )
    assert manifest.raw == (
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
        b'"config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":'
        + str(len(config)).encode()
        + b',"digest":"'
        + str(Digest.of(config)).encode()
        + b'"},"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json",'
        b'"size":'
        + str(len(payload)).encode()
        + b',"digest":"'
        + str(layer).encode()
        + b'","annotations":{"dev.cosignproject.cosign/signature":"c2ln"}}]}'
    )
    assert manifest.media_type == mt.OCI_MANIFEST
    assert manifest.config is not None and manifest.config.media_type == mt.OCI_CONFIG
    assert manifest == parse_manifest(manifest.raw)
    assert signature_entries(manifest) == [entry.descriptor()]


def test_second_signature_appends_a_layer_and_keeps_the_first() -> None:
    first = SignatureEntry(simple_signing_payload(DIGEST, IDENTITY), "Zmlyc3Q=")
    second = SignatureEntry(simple_signing_payload(DIGEST, IDENTITY), "c2Vjb25k")
    one, _ = signature_manifest([first])
    two, config = signature_manifest([first, second])

    layers = signature_entries(two)
    assert [d.annotations[SIGNATURE_ANNOTATION] for d in layers] == ["Zmlyc3Q=", "c2Vjb25k"]
    assert layers[0] == signature_entries(one)[0]
    assert json.loads(config)["rootfs"]["diff_ids"] == [str(d.digest) for d in layers]
    assert len(json.loads(config)["history"]) == 2


def test_identical_signature_is_not_added_twice() -> None:
    entry = SignatureEntry(simple_signing_payload(DIGEST, IDENTITY), "Zmlyc3Q=")
    again = SignatureEntry(simple_signing_payload(DIGEST, IDENTITY), "Zmlyc3Q=")
    assert signature_manifest([entry, again])[0].raw == signature_manifest([entry])[0].raw


def test_entry_round_trips_through_its_layer_with_extra_annotations() -> None:
    entry = SignatureEntry(b"payload", "c2ln", {"dev.sigstore.cosign/bundle": "{}"})
    manifest, _ = signature_manifest([entry])
    layer = signature_entries(manifest)[0]
    assert SignatureEntry.from_layer(layer, b"payload") == entry


def test_entry_from_a_layer_refuses_other_bytes() -> None:
    layer = SignatureEntry(b"payload", "c2ln").descriptor()
    with pytest.raises(DigestMismatchError):
        SignatureEntry.from_layer(layer, b"PAYLOAD")
    with pytest.raises(SizeMismatchError):
        SignatureEntry.from_layer(layer, b"payload!")


def test_entry_with_two_different_signatures_is_refused() -> None:
    with pytest.raises(ManifestError, match="different signature"):
        SignatureEntry(b"payload", "c2ln", {SIGNATURE_ANNOTATION: "b3RoZXI="})


def test_unsigned_layer_read_back_is_judged_by_the_check_not_refused() -> None:
    payload = simple_signing_payload(DIGEST, IDENTITY)
    entry = SignatureEntry(payload, "")
    assert _check(payload, entry.signature_b64) == "signature"


def test_empty_signature_manifest_is_refused() -> None:
    with pytest.raises(ManifestError):
        signature_manifest([])


def test_signature_entries_skip_other_layers() -> None:
    entry = SignatureEntry(b"payload", "c2ln")
    manifest, _ = signature_manifest([entry])
    doc = json.loads(manifest.raw)
    doc["layers"].append(
        {
            "mediaType": "text/plain",
            "size": 1,
            "digest": str(DIGEST),
            "annotations": {SIGNATURE_ANNOTATION: "c2ln"},
        }
    )
    mixed = parse_manifest(json.dumps(doc).encode())
    assert signature_entries(mixed) == [entry.descriptor()]


# ----------------------------------------------------------------- the check, step by step
def _check(
    payload: bytes,
    signature_b64: str | None = None,
    *,
    media_type: str = SIMPLE_SIGNING_MEDIA_TYPE,
    digest: Digest = DIGEST,
    identity: str | None = IDENTITY,
) -> str | None:
    return check_simple_signature(
        media_type,
        payload,
        fake_sign(payload) if signature_b64 is None else signature_b64,
        FakeKey(),
        digest,
        identity,
    )


def test_good_signature_passes() -> None:
    assert _check(simple_signing_payload(DIGEST, IDENTITY)) is None


def test_step1_other_media_type_is_not_a_signature() -> None:
    assert _check(simple_signing_payload(DIGEST, IDENTITY), media_type="text/plain") == "mediatype"


@pytest.mark.parametrize("bad", ["", "not base64!", "c2ln", "c2l", "c2ln\n"])
def test_step2_bad_or_malformed_signature(bad: str) -> None:
    assert _check(simple_signing_payload(DIGEST, IDENTITY), bad) == "signature"


def test_step2_signature_is_checked_before_the_payload_is_parsed() -> None:
    assert _check(b"{", "c2ln") == "signature"


def test_step3_signed_garbage_is_a_payload_failure() -> None:
    assert _check(b"{") == "payload"


def test_step3_other_type_is_a_payload_failure() -> None:
    raw = simple_signing_payload(DIGEST, IDENTITY).replace(PAYLOAD_TYPE.encode(), b"atomic")
    assert _check(raw) == "payload"


def test_step3_signature_of_another_manifest() -> None:
    assert _check(simple_signing_payload(OTHER_DIGEST, IDENTITY)) == "digest"


@pytest.mark.parametrize(
    ("claimed", "expected", "reason"),
    [
        ("registry.example:5000/team/app", "registry.example:5000/team/app", None),
        ("registry.example:5000/team/app:v1", "registry.example:5000/team/app", None),
        (
            "registry.example:5000/team/app@sha256:" + "ab" * 32,
            "registry.example:5000/team/app:other",
            None,
        ),
        ("index.docker.io/library/nginx", "nginx", None),
        ("registry.example:5000/team/app", "registry.example:5000/team/other", "identity"),
        ("registry.example:5000/team/app", "registry.example:5001/team/app", "identity"),
        ("registry.example:5000/team/app", "registry.example:5000/team", "identity"),
    ],
)
def test_step4_identity_is_compared_by_repository(
    claimed: str, expected: str, reason: str | None
) -> None:
    assert _check(simple_signing_payload(DIGEST, claimed), identity=expected) == reason


def test_step4_unparseable_claimed_identity_is_refused() -> None:
    raw = simple_signing_payload(DIGEST, IDENTITY).replace(IDENTITY.encode(), b"NOT VALID")
    assert _check(raw) == "identity"
    assert _check(raw, identity=None) is None
