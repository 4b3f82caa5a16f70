"""Digests and manifests: exact bytes in, exact bytes kept, anything ambiguous refused."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from bundler.errors import DigestMismatchError, ManifestError, ReferenceFormatError
from bundler.model import mediatypes as mt
from bundler.model.digest import Digest
from bundler.model.manifest import MAX_MANIFEST_BYTES, parse_manifest

HEX = "ab" * 32


def _desc(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {
        "mediaType": media_type,
        "digest": f"sha256:{hashlib.sha256(data).hexdigest()}",
        "size": len(data),
        **extra,
    }


CONFIG = _desc(mt.OCI_CONFIG, b"{}")
LAYER = _desc("application/vnd.oci.image.layer.v1.tar+gzip", b"layer")
CHILD = _desc(
    mt.OCI_MANIFEST, b"child", platform={"os": "linux", "architecture": "arm64", "variant": "v8"}
)


def _raw(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


# -- Digest --------------------------------------------------------------------------------


def test_digest_parse_and_str_round_trip() -> None:
    d = Digest.parse(f"sha256:{HEX}")
    assert (d.algorithm, d.hex, str(d)) == ("sha256", HEX, f"sha256:{HEX}")
    assert d.tag_form() == f"sha256-{HEX}"
    assert d.short() == f"sha256:{HEX[:12]}"


def test_sha512_digest_is_accepted() -> None:
    assert Digest.parse("sha512:" + "0" * 128).algorithm == "sha512"


def test_digest_of_hashes_exact_bytes() -> None:
    assert Digest.of(b"hello") == Digest.parse(
        "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    )
    assert Digest.of(b"hello", "sha512").hex == hashlib.sha512(b"hello").hexdigest()
    assert Digest.of(b"hello").matches(b"hello")
    assert not Digest.of(b"hello").matches(b"hello ")


@pytest.mark.parametrize(
    "text",
    [
        "",
        HEX,
        f"sha256:{HEX[:-2]}",
        f"sha256:{HEX}00",
        f"sha256:{HEX.upper()}",
        f"SHA256:{HEX}",
        f"md5:{'0' * 32}",
        f"sha1:{'0' * 40}",
        f"sha384:{'0' * 96}",
        f"sha256:{'g' * 64}",
        f"sha256: {HEX}",
        f"sha256:{HEX}/../x",
    ],
)
def test_malformed_or_unverifiable_digest_is_refused(text: str) -> None:
    with pytest.raises(ReferenceFormatError):
        Digest.parse(text)


def test_digest_with_trailing_newline_is_refused() -> None:
    # "sha256:<hex>\n" is not the same string as its canonical form; accepting it lets one
    # descriptor digest be spelled two ways.
    with pytest.raises(ReferenceFormatError):
        Digest.parse(f"sha256:{HEX}\n")


# -- parse_manifest: the four shapes ------------------------------------------------------


def test_oci_image_manifest_parses() -> None:
    raw = _raw(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": CONFIG,
            "layers": [LAYER],
            "annotations": {"a": "b"},
        }
    )
    m = parse_manifest(raw)
    assert m.media_type == mt.OCI_MANIFEST
    assert not m.is_index
    assert m.config is not None and m.config.media_type == mt.OCI_CONFIG
    assert [str(d.digest) for d in m.layers] == [LAYER["digest"]]
    assert m.blobs() == (m.config, *m.layers)
    assert m.annotations == {"a": "b"}
    assert m.descriptor().size == len(raw)


def test_oci_index_parses_with_platforms() -> None:
    m = parse_manifest(_raw({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [CHILD]}))
    assert m.is_index
    assert m.media_type == mt.OCI_INDEX
    (child,) = m.manifests
    assert child.platform is not None and str(child.platform) == "linux/arm64/v8"
    assert m.blobs() == ()


def test_docker_v2_manifest_parses() -> None:
    raw = _raw(
        {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_MANIFEST,
            "config": _desc(mt.DOCKER_CONFIG, b"{}"),
            "layers": [_desc("application/vnd.docker.image.rootfs.diff.tar.gzip", b"l")],
        }
    )
    m = parse_manifest(raw, media_type=mt.DOCKER_MANIFEST)
    assert m.media_type == mt.DOCKER_MANIFEST
    assert not m.is_index


def test_docker_manifest_list_parses() -> None:
    raw = _raw(
        {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_MANIFEST_LIST,
            "manifests": [
                _desc(mt.DOCKER_MANIFEST, b"c", platform={"os": "linux", "architecture": "amd64"})
            ],
        }
    )
    m = parse_manifest(raw)
    assert m.is_index
    assert m.media_type == mt.DOCKER_MANIFEST_LIST


def test_subject_and_artifact_type_are_read() -> None:
    raw = _raw(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "artifactType": "x/sig",
            "config": _desc(mt.OCI_EMPTY, b"{}"),
            "layers": [],
            "subject": _desc(mt.OCI_MANIFEST, b"subject"),
        }
    )
    m = parse_manifest(raw)
    assert m.artifact_type == "x/sig"
    assert m.subject is not None and m.subject.digest == Digest.of(b"subject")


# -- missing or conflicting mediaType ---------------------------------------------------


def test_missing_media_type_is_taken_from_the_served_type() -> None:
    raw = _raw({"schemaVersion": 2, "config": _desc(mt.DOCKER_CONFIG, b"{}"), "layers": []})
    assert parse_manifest(raw, media_type=mt.DOCKER_MANIFEST).media_type == mt.DOCKER_MANIFEST


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"schemaVersion": 2, "manifests": [CHILD]}, mt.OCI_INDEX),
        ({"schemaVersion": 2, "config": CONFIG, "layers": [LAYER]}, mt.OCI_MANIFEST),
    ],
)
def test_missing_media_type_is_inferred_from_shape(doc: dict[str, Any], expected: str) -> None:
    # umoci and Helm v4 omit the top-level mediaType; the OCI spec allows it.
    assert parse_manifest(_raw(doc)).media_type == expected
    # A hint that is not a manifest type (e.g. a generic Content-Type) does not override.
    assert parse_manifest(_raw(doc), media_type="application/json").media_type == expected


def test_shape_that_is_neither_manifest_nor_index_is_refused() -> None:
    with pytest.raises(ManifestError, match="cannot tell"):
        parse_manifest(_raw({"schemaVersion": 2, "layers": []}))


def test_declared_type_differing_from_served_type_is_refused() -> None:
    raw = _raw({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": CONFIG, "layers": []})
    with pytest.raises(ManifestError, match="served as"):
        parse_manifest(raw, media_type=mt.OCI_INDEX)


def test_index_declaring_itself_a_manifest_with_manifests_is_refused() -> None:
    raw = _raw(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": CONFIG,
            "layers": [],
            "manifests": [CHILD],
        }
    )
    with pytest.raises(ManifestError, match="must not carry 'manifests'"):
        parse_manifest(raw)


def test_index_carrying_layers_is_refused() -> None:
    raw = _raw({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [], "layers": [LAYER]})
    with pytest.raises(ManifestError, match="must not carry"):
        parse_manifest(raw)


def test_unsupported_media_type_is_refused() -> None:
    raw = _raw(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.example+json",
            "config": CONFIG,
            "layers": [],
        }
    )
    with pytest.raises(ManifestError, match="unsupported"):
        parse_manifest(raw)


# -- ambiguity, versions, bounds, integrity -------------------------------------------


def test_duplicate_json_keys_are_refused() -> None:
    # Two parsers picking different duplicates would see two manifests under one digest.
    raw = (
        b'{"schemaVersion":2,"mediaType":"' + mt.OCI_MANIFEST.encode() + b'",'
        b'"config":' + json.dumps(CONFIG).encode() + b","
        b'"layers":[],"layers":' + json.dumps([LAYER]).encode() + b"}"
    )
    with pytest.raises(ManifestError, match="duplicate key 'layers'"):
        parse_manifest(raw)


def test_duplicate_keys_nested_in_a_descriptor_are_refused() -> None:
    cfg = json.dumps(CONFIG).encode()[:-1] + b',"size":0}'
    raw = b'{"schemaVersion":2,"config":' + cfg + b',"layers":[]}'
    with pytest.raises(ManifestError, match="duplicate key 'size'"):
        parse_manifest(raw)


@pytest.mark.parametrize("version", [1, 3, "2", None, True])
def test_schema_version_other_than_2_is_refused(version: Any) -> None:
    doc: dict[str, Any] = {"mediaType": mt.OCI_MANIFEST, "config": CONFIG, "layers": []}
    if version is not None:
        doc["schemaVersion"] = version
    with pytest.raises(ManifestError, match="schemaVersion"):
        parse_manifest(_raw(doc))


def test_manifest_over_4_mib_is_refused_before_parsing() -> None:
    raw = b"{" + b" " * MAX_MANIFEST_BYTES + b"}"
    with pytest.raises(ManifestError, match="more than"):
        parse_manifest(raw)


def test_manifest_of_exactly_4_mib_is_accepted() -> None:
    head = _raw({"schemaVersion": 2, "config": CONFIG, "layers": []})
    raw = head[:-1] + b" " * (MAX_MANIFEST_BYTES - len(head)) + b"}"
    assert len(raw) == MAX_MANIFEST_BYTES
    assert parse_manifest(raw).size == MAX_MANIFEST_BYTES


@pytest.mark.parametrize(
    "raw", [b"", b"not json", b"[]", b'"manifest"', b"\xff\xfe", b'{"schemaVersion":2,']
)
def test_non_object_or_invalid_json_is_refused(raw: bytes) -> None:
    with pytest.raises(ManifestError):
        parse_manifest(raw)


def test_expected_digest_mismatch_raises_digest_mismatch() -> None:
    raw = _raw({"schemaVersion": 2, "config": CONFIG, "layers": []})
    other = Digest.of(raw + b" ")
    with pytest.raises(DigestMismatchError, match=str(other)):
        parse_manifest(raw, expected=other)


def test_expected_digest_is_checked_before_the_json_is_parsed() -> None:
    # Unverified bytes never reach the JSON parser.
    with pytest.raises(DigestMismatchError):
        parse_manifest(b'{"a":1,"a":2}', expected=Digest.of(b"something else"))


def test_expected_sha512_digest_is_verified_with_sha512() -> None:
    raw = _raw({"schemaVersion": 2, "config": CONFIG, "layers": []})
    m = parse_manifest(raw, expected=Digest.of(raw, "sha512"))
    assert m.digest == Digest.of(raw, "sha512")


def test_raw_bytes_are_kept_exactly_and_digest_is_of_raw_bytes() -> None:
    raw = (
        b'{\n   "schemaVersion" :2 ,\t"mediaType":"' + mt.OCI_MANIFEST.encode() + b'",\n'
        b'  "config": ' + json.dumps(CONFIG, indent=7).encode() + b',"layers":[ ]  }\n\n'
    )
    m = parse_manifest(raw, expected=Digest.of(raw))
    assert m.raw == raw
    assert m.size == len(raw)
    assert m.digest == Digest.of(raw)
    canonical = json.dumps(json.loads(raw), separators=(",", ":")).encode()
    assert m.digest != Digest.of(canonical)
    assert m.descriptor().digest == Digest.of(raw)


@pytest.mark.parametrize(
    "bad",
    [
        {"mediaType": mt.OCI_CONFIG, "digest": f"sha256:{HEX}", "size": -1},
        {"mediaType": mt.OCI_CONFIG, "digest": f"sha256:{HEX}", "size": True},
        {"mediaType": mt.OCI_CONFIG, "digest": f"sha256:{HEX}", "size": "1"},
        {"mediaType": mt.OCI_CONFIG, "digest": "sha256:short", "size": 1},
        {"mediaType": mt.OCI_CONFIG, "digest": f"md5:{'0' * 32}", "size": 1},
        {"digest": f"sha256:{HEX}", "size": 1},
        {"mediaType": mt.OCI_CONFIG, "size": 1},
        "not an object",
    ],
)
def test_malformed_descriptor_is_refused(bad: Any) -> None:
    with pytest.raises(ManifestError):
        parse_manifest(_raw({"schemaVersion": 2, "config": bad, "layers": []}))
