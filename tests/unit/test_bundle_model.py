"""The bundle format: canonical bytes, the lock round trip, and reading a bundle back."""

from __future__ import annotations

import json

import pytest

from bundler.errors import ManifestError
from bundler.model import mediatypes as mt
from bundler.model.bundle import (
    ANNOTATION_IMAGE_REF,
    ANNOTATION_ROLE,
    BUNDLE_ARTIFACT_TYPE,
    LOCK_MEDIA_TYPE,
    ROLE_CHART,
    ROLE_IMAGE,
    ROLE_LOCK,
    Blob,
    BundleEntry,
    BundleLock,
    BundleView,
    LockedChart,
    LockedImage,
    ValuePath,
    bundle_index,
    canonical_json,
    chart_manifest,
    helm_tag,
    lock_manifest,
)
from bundler.model.digest import Digest
from bundler.model.manifest import parse_manifest

D1 = Digest.of(b"one")
D2 = Digest.of(b"two")


def _lock(**overrides: object) -> BundleLock:
    fields: dict[str, object] = dict(
        name="demo",
        version="1.0.0",
        chart=LockedChart("demo", "1.0.0", "1.0.0", D1, D2, "directory"),
        images=(
            LockedImage(
                "example.local/b:1",
                D2,
                mt.OCI_MANIFEST,
                10,
                ("linux/amd64",),
                (ValuePath("b.image", "string"),),
                ("values",),
            ),
            LockedImage(
                "example.local/a:1",
                D1,
                mt.OCI_INDEX,
                20,
                ("linux/amd64", "linux/arm64"),
                (ValuePath("a.image", "map"),),
                ("template", "values"),
            ),
        ),
        rendered=True,
    )
    fields.update(overrides)
    return BundleLock(**fields)  # type: ignore[arg-type]


def test_canonical_json_is_independent_of_key_order() -> None:
    assert canonical_json({"b": 1, "a": [2, {"d": 3, "c": 4}]}) == canonical_json(
        {"a": [2, {"c": 4, "d": 3}], "b": 1}
    )
    assert canonical_json({"a": 1}) == b'{"a":1}'


def test_lock_round_trips_and_sorts_images() -> None:
    lock = _lock()
    raw = lock.to_bytes()
    assert [i["reference"] for i in json.loads(raw)["images"]] == [
        "example.local/a:1",
        "example.local/b:1",
    ]
    again = BundleLock.from_bytes(raw)
    assert again.to_bytes() == raw


def test_lock_bytes_do_not_depend_on_input_order() -> None:
    lock = _lock()
    reversed_lock = _lock(images=tuple(reversed(lock.images)))
    assert lock.to_bytes() == reversed_lock.to_bytes()


def test_lock_validates_against_its_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from bundler.adapters.bundleconfig import load_schema

    jsonschema.validate(_lock().to_json(), load_schema("bundle-lock.schema.json"))


@pytest.mark.parametrize(
    "doc",
    [
        b"[]",
        b'{"schemaVersion": 2, "kind": "BundleLock"}',
        b'{"schemaVersion": 1}',
        b'{"schemaVersion": 1, "kind": "BundleLock", "bundle": {}}',
    ],
)
def test_malformed_lock_is_refused(doc: bytes) -> None:
    with pytest.raises(ManifestError):
        BundleLock.from_bytes(doc)


def test_oversized_lock_is_refused() -> None:
    with pytest.raises(ManifestError, match="more than"):
        BundleLock.from_bytes(b" " * (4 * 1024 * 1024 + 1))


def _bundle() -> tuple[bytes, list[BundleEntry]]:
    config = Blob.of(mt.HELM_CONFIG, b'{"name":"demo","version":"1.0.0"}')
    archive = Blob.of(mt.HELM_CHART, b"not really a tgz")
    chart = chart_manifest(config, archive, {"org.opencontainers.image.title": "demo"})
    image = parse_manifest(
        canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": mt.OCI_MANIFEST,
                "config": {"mediaType": mt.OCI_CONFIG, "digest": str(D1), "size": 3},
                "layers": [],
            }
        )
    )
    lock = lock_manifest(Blob.of(LOCK_MEDIA_TYPE, _lock().to_bytes()))
    entries = [
        BundleEntry(ROLE_CHART, chart),
        BundleEntry(ROLE_IMAGE, image, image_ref="example.local/a:1"),
        BundleEntry(ROLE_LOCK, lock),
    ]
    return bundle_index(entries, {"org.opencontainers.image.title": "demo"}).raw, entries


def test_bundle_index_pins_every_entry_with_its_role() -> None:
    raw, entries = _bundle()
    index = parse_manifest(raw)
    assert index.artifact_type == BUNDLE_ARTIFACT_TYPE
    assert [d.annotations[ANNOTATION_ROLE] for d in index.manifests] == ["chart", "image", "lock"]
    assert [d.digest for d in index.manifests] == [e.manifest.digest for e in entries]
    assert index.manifests[1].annotations[ANNOTATION_IMAGE_REF] == "example.local/a:1"
    assert index.manifests[2].artifact_type == LOCK_MEDIA_TYPE
    view = BundleView.of(index)
    assert view.chart.digest == entries[0].manifest.digest
    assert [d.digest for d in view.images] == [entries[1].manifest.digest]


def test_bundle_index_is_reproducible() -> None:
    assert _bundle()[0] == _bundle()[0]


def test_a_plain_index_is_not_a_bundle() -> None:
    plain = parse_manifest(
        canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []})
    )
    with pytest.raises(ManifestError, match="not a bundle"):
        BundleView.of(plain)


def test_a_bundle_without_its_lock_is_refused() -> None:
    raw, _ = _bundle()
    doc = json.loads(raw)
    doc["manifests"] = doc["manifests"][:2]
    with pytest.raises(ManifestError, match="one chart and one lock"):
        BundleView.of(parse_manifest(canonical_json(doc)))


def test_lock_manifest_is_an_oci_artifact_with_the_empty_config() -> None:
    lock = lock_manifest(Blob.of(LOCK_MEDIA_TYPE, b"{}"))
    doc = json.loads(lock.raw)
    assert doc["artifactType"] == LOCK_MEDIA_TYPE
    assert doc["config"]["mediaType"] == mt.OCI_EMPTY
    assert doc["config"]["digest"] == str(Digest.of(b"{}"))


def test_helm_tag_maps_plus_to_underscore() -> None:
    assert helm_tag("1.2.3+build.4") == "1.2.3_build.4"
