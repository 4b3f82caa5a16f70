"""What a tampered medium, a crash or a second signer can make ``sign`` and ``approve`` do.

Signing a layout rewrites signature manifests in place and removes the ones it replaced;
signing an archive appends to it (test_sign_append.py). None of that may delete bundle
content, add a second signature by the same key, leave blobs that step 6 counts, or lose a
signature written by another signer at the same moment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from memory_bundles import (
    APPROVER,
    VENDOR,
    MemoryBundle,
    policy,
    signed_bundle,
    transports,
)

from bundler.adapters.crypto import generate_key
from bundler.adapters.layout import LayoutTarget
from bundler.adapters.memory import MemoryStore, MemoryTarget
from bundler.errors import TransportError
from bundler.model import mediatypes as mt
from bundler.model.digest import Digest
from bundler.model.manifest import parse_manifest
from bundler.model.signature import cosign_signature_tag, signature_entries
from bundler.services import copy as copy_service
from bundler.services import sign as sign_service
from bundler.services import signatures
from bundler.services.sign import sign
from bundler.services.transports import Transports, parse_location
from bundler.services.verify import verify

THIRD = generate_key("ecdsa-p256")


def signatures_on(store: MemoryStore, subject: Digest) -> int:
    """How many signature layers the cosign tag of ``subject`` holds."""
    digest = store.names()[cosign_signature_tag(subject)]
    manifest = parse_manifest(store.blobs()[digest], media_type=mt.OCI_MANIFEST)
    return len(signature_entries(manifest))


def test_tampered_signature_config_pointing_at_chart_is_not_deleted_by_approve() -> None:
    stores: dict[str, MemoryStore] = {}
    bundle = signed_bundle(stores)
    store = bundle.store
    chart_blob = bundle.blob_of(mt.HELM_CHART)
    tag = cosign_signature_tag(bundle.index.digest)
    original = store.names()[tag]
    old = json.loads(store.blobs()[original])
    store.delete_blob(original)  # the courier replaces the file, leaving no garbage behind
    store.delete_blob(Digest.parse(old["config"]["digest"]))
    chart_descriptor = next(d for d in bundle.chart.blobs() if d.digest == chart_blob)
    old["config"] = chart_descriptor.to_json()  # the courier's edit: config -> the chart
    raw = json.dumps(old).encode()
    tampered = parse_manifest(raw, media_type=mt.OCI_MANIFEST)
    target = store.target()
    target.put_manifest(tampered)
    target.tag(tag, tampered)
    target.commit()

    sign(bundle.location, APPROVER, transports(stores), recursive=False)

    assert chart_blob in store.blobs()
    report = verify(bundle.store.source(bundle.tag), policy(approval=True))
    assert report.error is None, report.error


def test_re_signing_with_the_same_key_adds_no_second_signature() -> None:
    stores: dict[str, MemoryStore] = {}
    bundle = signed_bundle(stores)  # VENDOR is ECDSA: a second signature would differ in bytes
    before = bundle.store.blobs()
    names = bundle.store.names()

    again = sign(bundle.location, VENDOR, transports(stores))

    assert again.signed == [] and again.tags == []
    assert bundle.index.digest in again.already_signed
    assert bundle.store.blobs() == before and bundle.store.names() == names
    assert signatures_on(bundle.store, bundle.index.digest) == 1


def test_re_signing_an_archive_with_the_same_key_leaves_it_byte_identical(tmp_path: Path) -> None:
    stores: dict[str, MemoryStore] = {}
    bundle = signed_bundle(stores)
    archive = tmp_path / "demo.tar"
    copy_service.copy(bundle.store.source(bundle.tag), _archive_target(archive))
    first = archive.read_bytes()

    result = sign(parse_location(f"archive:{archive}"), VENDOR, Transports(use_blob_cache=False))

    assert result.signed == [] and result.already_signed
    assert archive.read_bytes() == first
    assert [p.name for p in tmp_path.iterdir()] == ["demo.tar"]  # no partial left either


def _archive_target(path: Path) -> Any:
    from bundler.adapters.archive import ArchiveTarget

    return ArchiveTarget(path, None)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C at the worst moment: the new blobs are written, the names are not."""


def test_interrupted_sign_leaves_nothing_step_6_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    stores: dict[str, MemoryStore] = {}
    bundle = signed_bundle(stores)
    before = bundle.store.blobs()

    def interrupted_commit(self: MemoryTarget) -> None:
        raise Interrupted

    monkeypatch.setattr(MemoryTarget, "commit", interrupted_commit)
    with pytest.raises(Interrupted):
        sign(bundle.location, APPROVER, transports(stores))
    monkeypatch.undo()

    assert bundle.store.blobs() == before
    report = verify(bundle.store.source(bundle.tag), policy())
    assert report.error is None, report.error


def _layouts_have_a_write_lock() -> bool:
    return hasattr(LayoutTarget(Path("/nonexistent/bundler-probe"), None), "write_lock")


def _layout_copy(bundle: MemoryBundle, path: Path) -> str:
    copy_service.copy(bundle.store.source(bundle.tag), LayoutTarget(path, bundle.tag))
    return f"oci:{path}:{bundle.tag}"


@pytest.mark.skipif(
    not _layouts_have_a_write_lock(), reason="needs the layout write lock (adapters/layout.py)"
)
def test_second_signer_at_the_same_moment_never_loses_the_first_signature(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stores: dict[str, MemoryStore] = {}
    bundle = signed_bundle(stores)
    where = _layout_copy(bundle, tmp_path / "layout")
    monkeypatch.setattr("bundler.adapters.fsafe.LOCK_WAIT_SECONDS", 0.2)
    real = signatures.read_entry
    told_signed: list[str] = []
    nested: list[BaseException] = []
    raced: list[object] = []

    def read_then_race(source: Any, layer: Any) -> Any:
        found = real(source, layer)
        if not raced:
            raced.append(layer)
            # The second signer starts after the first has read the existing signatures and
            # before it writes: the moment a lost update happens.
            try:
                sign(
                    parse_location(where),
                    APPROVER,
                    Transports(use_blob_cache=False),
                    recursive=False,
                )
                told_signed.append("approver")
            except TransportError as exc:
                nested.append(exc)
        return found

    monkeypatch.setattr(sign_service, "read_entry", read_then_race)
    sign(parse_location(where), THIRD, Transports(use_blob_cache=False), recursive=False)
    told_signed.append("third")
    monkeypatch.undo()

    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    tag = cosign_signature_tag(bundle.index.digest)
    digest = next(
        m["digest"]
        for m in index["manifests"]
        if m["annotations"].get(mt.ANNOTATION_REF_NAME) == tag
    )
    raw = (tmp_path / "layout" / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
    layers = json.loads(raw)["layers"]
    expected = 1 + len(told_signed)  # the vendor's, plus every signer told "signed"
    assert len(layers) == expected, (told_signed, nested)
