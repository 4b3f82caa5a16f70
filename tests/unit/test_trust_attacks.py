"""Attacks around the verification kernel, each named after what the attacker does.

A courier who can rewrite the medium, a hostile registry, a careless policy author: each test
builds a real signed bundle in memory (``memory_bundles``), does one thing an attacker would,
and checks that verify and import refuse it (or leave the attacker's content behind), with a
step report rather than a crash.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import memory_bundles
import pytest
from memory_bundles import (
    STRANGER,
    VENDOR,
    WEB_REF,
    MemoryBundle,
    policy,
    signed_bundle,
    transports,
)
from test_promote_service import plan_for

from bundler.adapters.bundleconfig import load_bundle_config
from bundler.adapters.memory import MemoryStore
from bundler.adapters.stream import VerifiedStream
from bundler.adapters.trustpolicy import load_trust_policy
from bundler.cli.main import exit_code_for
from bundler.errors import ConfigError, NotFoundError, RollbackError, VerificationError
from bundler.model import mediatypes as mt
from bundler.model.bundle import Blob
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest
from bundler.model.manifest import Manifest, parse_manifest
from bundler.model.plan import TransferPlan
from bundler.model.policy import VersionRange
from bundler.model.signature import (
    COSIGN_SIGNATURE_ARTIFACT_TYPE,
    SIGNATURE_ANNOTATION,
    cosign_signature_tag,
    simple_signing_payload,
)
from bundler.services.overlay import OverlaySource
from bundler.services.promote import check_rollback
from bundler.services.transfer import import_bundle
from bundler.services.transports import memory_location
from bundler.services.verify import VerifyReport, verify

INTERNAL = memory_location("internal")


@pytest.fixture
def stores() -> dict[str, MemoryStore]:
    return {}


def refused_at(report: VerifyReport, step: int) -> str:
    assert report.bundle is None
    assert report.error is not None and report.error.step == step, report.error
    assert exit_code_for(report.error) == 12
    return str(report.error)


def import_refused(stores: dict[str, MemoryStore], source: str, ref: str, step: int) -> str:
    with pytest.raises(VerificationError) as caught:
        import_bundle(memory_location(source, ref), INTERNAL, transports(stores), policy())
    assert caught.value.step == step, caught.value
    assert "internal" not in stores or stores["internal"].entries == []
    return str(caught.value)


def put(
    store: MemoryStore, manifest: Manifest, blobs: dict[Digest, bytes], tag: str | None
) -> None:
    """Write ``manifest`` with its blobs; named ``tag``, else an unnamed referrer entry."""
    target = store.target()
    target.begin(TransferPlan(root=manifest.descriptor()))
    for digest, data in blobs.items():
        descriptor = Descriptor("application/octet-stream", digest, len(data))
        target.put_blob(VerifiedStream([data], descriptor, "test"))
    target.put_manifest(manifest)
    if tag is None:
        assert manifest.subject is not None
        target.add_referrer(manifest.subject.digest, manifest)
    else:
        target.tag(tag, manifest)
    target.commit()


def signature_image(
    layers: list[tuple[bytes, str]], subject: Manifest | None = None
) -> tuple[Manifest, dict[Digest, bytes]]:
    """A signature-shaped manifest whose simple-signing layers are ``(payload, signature)``."""
    config = Blob.of(mt.OCI_CONFIG, b"{}")
    blobs = {config.descriptor.digest: config.data}
    descriptors = []
    for payload, signature in layers:
        blob = Blob.of(mt.COSIGN_SIMPLESIGNING, payload, {SIGNATURE_ANNOTATION: signature})
        blobs[blob.descriptor.digest] = payload
        descriptors.append(blob.descriptor.to_json())
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": config.descriptor.to_json(),
        "layers": descriptors,
    }
    if subject is not None:  # an OCI 1.1 referrer, as cosign writes one
        doc["artifactType"] = COSIGN_SIGNATURE_ARTIFACT_TYPE
        doc["subject"] = subject.descriptor().to_json()
    return parse_manifest(json.dumps(doc).encode(), media_type=mt.OCI_MANIFEST), blobs


def vendor_layer(bundle: MemoryBundle) -> tuple[bytes, str]:
    payload = simple_signing_payload(bundle.index.digest, "demo")  # as sign wrote it
    return payload, base64.b64encode(VENDOR.sign(payload)).decode()


JUNK = (b"smuggled bytes, not a signature " * 64, "bm90IGEgc2lnbmF0dXJl")


# ------------------------------------------------------- names are taken from the signed lock
def test_signed_older_bundle_renamed_as_the_newer_version_is_refused(
    stores: dict[str, MemoryStore],
) -> None:
    old = signed_bundle(stores, version="0.9.0")
    put(old.store, old.index, {}, "demo:1.0.0")
    says = refused_at(verify(old.store.source("demo:1.0.0"), policy()), 6)
    assert "demo:1.0.0" in says and "demo 0.9.0" in says
    import_refused(stores, "vendor", "demo:1.0.0", 6)


def test_import_names_the_bundle_from_its_signed_lock_not_the_medium(
    stores: dict[str, MemoryStore],
) -> None:
    old = signed_bundle(stores, version="0.9.0")
    # Selected by digest, the medium gives no name at all: the lock's is written.
    by_digest = memory_location("vendor", str(old.index.digest))
    import_bundle(by_digest, INTERNAL, transports(stores), policy())
    assert stores["internal"].names()["demo:0.9.0"] == old.index.digest


def test_import_refuses_to_tag_a_signed_older_bundle_as_the_newer_version(
    stores: dict[str, MemoryStore],
) -> None:
    signed_bundle(stores, version="0.9.0")
    with pytest.raises(VerificationError) as caught:
        import_bundle(
            memory_location("vendor", "demo:0.9.0"),
            memory_location("internal", "demo:1.0.0"),
            transports(stores),
            policy(),
        )
    assert caught.value.step == 6 and "demo 0.9.0" in str(caught.value)
    assert stores["internal"].entries == []


def test_bundle_named_as_one_of_its_images_is_refused(stores: dict[str, MemoryStore]) -> None:
    bundle = signed_bundle(stores)
    put(bundle.store, bundle.index, {}, WEB_REF)
    says = refused_at(verify(bundle.store.source(bundle.tag), policy()), 6)
    assert WEB_REF in says and "one of its own images" in says


def test_names_agreeing_with_the_lock_pass() -> None:
    from bundler.services.trust import name_problem

    lock = memory_bundles.build_bundle({}, version="1.0.0+b1").lock
    for name in ("demo:1.0.0_b1", "demo", "latest", "host:5000/vendor/demo:1.0.0_b1", "1.0.0_b1"):
        assert name_problem(lock, name) is None, name
    for name in ("demo:1.0.0", "demo:1.0.0_b2", "1.0.1", "host:5000/vendor/demo:v2.0.0"):
        assert name_problem(lock, name) is not None, name


# ------------------------------------------------- step 6: only verifying signature layers count
def test_unnamed_referrer_with_junk_simplesigning_layers_is_refused(
    stores: dict[str, MemoryStore],
) -> None:
    bundle = signed_bundle(stores)
    junk, blobs = signature_image([JUNK, (JUNK[0], "AAAA")], subject=bundle.index)
    put(bundle.store, junk, blobs, None)
    says = refused_at(verify(bundle.store.source(bundle.tag), policy()), 6)
    assert "referrer" in says and "no trusted key made it" in says
    import_refused(stores, "vendor", bundle.tag, 6)


def test_junk_layer_appended_to_the_real_signature_manifest_is_refused(
    stores: dict[str, MemoryStore],
) -> None:
    bundle = signed_bundle(stores)
    tag = cosign_signature_tag(bundle.index.digest)
    real = bundle.store.source(tag)
    real_manifest = real.fetch_manifest(real.resolve())
    forged, blobs = signature_image([vendor_layer(bundle), JUNK])
    put(bundle.store, forged, blobs, tag)
    # What the courier leaves is tidy: the replaced manifest and its config are gone.
    assert real_manifest.config is not None
    for gone in (real_manifest.digest, real_manifest.config.digest):
        bundle.store.delete_blob(gone)
    says = refused_at(verify(bundle.store.source(bundle.tag), policy()), 6)
    assert f"{tag} layer 2" in says
    import_refused(stores, "vendor", bundle.tag, 6)


def test_registry_source_junk_signature_layers_and_referrers_are_left_behind(
    stores: dict[str, MemoryStore],
) -> None:
    # Not a layout (as a registry is not): nothing is refused, but import copies only the
    # signature layers a trusted key made, and no other referrer.
    bundle = signed_bundle(stores)
    tag = cosign_signature_tag(bundle.index.digest)
    mixed, blobs = signature_image([vendor_layer(bundle), JUNK])
    referrer, more = signature_image([JUNK], subject=bundle.index)
    source = OverlaySource(bundle.store.source(bundle.tag))
    source.add(mixed, blobs, tag)
    source.add_referrer(bundle.index.digest, referrer, more)
    from bundler.services.graph import walk
    from bundler.services.transfer import trusted_copy_source
    from bundler.services.verify import check_signatures

    signed = check_signatures(source, policy())
    manifests = walk(source, bundle.index.descriptor()).manifests
    copied = trusted_copy_source(source, signed, manifests, policy())
    found = copied.find_tag(tag)
    assert found is not None and found.digest != mixed.digest
    kept = copied.fetch_manifest(found)
    assert [layer.digest for layer in kept.layers] == [mixed.layers[0].digest]
    assert copied.referrers(bundle.index.digest) == []
    assert copied.ref_name() == "demo:1.0.0"


def test_signature_by_a_key_the_policy_does_not_list_is_reported_and_left_behind(
    stores: dict[str, MemoryStore],
) -> None:
    # Another signer's well-formed signature (an approval, an upstream one) may sit in a
    # layout: it is not part of the verified bundle, and import never copies it.
    bundle = signed_bundle(stores)
    payload = simple_signing_payload(bundle.index.digest, "demo", {"smuggled": "x" * 1000})
    other, blobs = signature_image(
        [(payload, base64.b64encode(STRANGER.sign(payload)).decode())], subject=bundle.index
    )
    put(bundle.store, other, blobs, None)
    report = verify(bundle.store.source(bundle.tag), policy())
    assert report.bundle is not None, report.error
    assert "by keys the policy does not list" in report.steps[6][1]
    import_bundle(bundle.location, INTERNAL, transports(stores), policy())
    assert other.digest not in stores["internal"].blobs()
    assert payload not in stores["internal"].blobs().values()


# ---------------------------------------------- hostile signature manifests are step reports
def test_oversized_signature_layer_beside_a_valid_signature_is_reported_not_fatal(
    stores: dict[str, MemoryStore],
) -> None:
    bundle = signed_bundle(stores)
    huge, blobs = signature_image([(b"x" * (65 * 1024), "AAAA")], subject=bundle.index)
    put(bundle.store, huge, blobs, None)
    says = refused_at(verify(bundle.store.source(bundle.tag), policy()), 6)
    assert "66560 bytes" in says  # steps 1 to 5 passed on the vendor's signature


def test_index_under_the_signature_tag_is_a_step_report(stores: dict[str, MemoryStore]) -> None:
    bundle = signed_bundle(stores)
    index_doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
    fake = parse_manifest(json.dumps(index_doc).encode(), media_type=mt.OCI_INDEX)
    put(bundle.store, fake, {}, cosign_signature_tag(bundle.index.digest))
    says = refused_at(verify(bundle.store.source(bundle.tag), policy()), 2)
    assert "is an index, not a signature manifest" in says


def test_index_as_a_referrer_of_the_bundle_is_a_step_report(
    stores: dict[str, MemoryStore],
) -> None:
    bundle = signed_bundle(stores)
    index_doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [],
        "subject": bundle.index.descriptor().to_json(),
    }
    fake = parse_manifest(json.dumps(index_doc).encode(), media_type=mt.OCI_INDEX)
    put(bundle.store, fake, {}, None)
    assert str(fake.digest) in refused_at(verify(bundle.store.source(bundle.tag), policy()), 6)


# --------------------------------------------------------------- lock and chart cross-checked
def test_lock_claiming_another_chart_version_than_its_archive_is_refused(
    stores: dict[str, MemoryStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = memory_bundles.chart_archive
    monkeypatch.setattr(memory_bundles, "chart_archive", lambda name, _v: real(name, "0.9.0"))
    bundle = signed_bundle(stores, version="9.9.9")  # the lock says chart 9.9.9
    says = refused_at(verify(bundle.store.source(bundle.tag), policy()), 5)
    assert "the chart archive is demo 0.9.0, but the lock says demo 9.9.9" in says
    import_refused(stores, "vendor", bundle.tag, 5)


# ---------------------------------------------------------------- build metadata and ranges
def test_policy_equal_version_does_not_admit_build_metadata_variants() -> None:
    exact = VersionRange.parse("==1.0.0")
    assert exact.admits("1.0.0")
    assert not exact.admits("1.0.0+evil")
    assert VersionRange.parse("1.0.0+b1").admits("1.0.0+b1")
    assert not VersionRange.parse("1.0.0+b1").admits("1.0.0+b2")
    assert VersionRange.parse("!=1.0.0").admits("1.0.0+b1")
    assert VersionRange.parse(">=1.0.0 <2.0.0").admits("1.0.0+b1")


def test_range_does_not_admit_a_prerelease_of_its_upper_bound() -> None:
    stable = VersionRange.parse(">=1.0.0 <2.0.0")
    assert not stable.admits("2.0.0-rc.1")
    assert not stable.admits("1.5.0-beta.1")
    assert stable.admits("1.5.0")
    candidates = VersionRange.parse(">=2.0.0-rc.1 <3.0.0")
    assert candidates.admits("2.0.0-rc.2") and candidates.admits("2.1.0")
    assert not candidates.admits("2.1.0-rc.1")  # another major.minor.patch than the comparator


@pytest.mark.parametrize("promoted_tag", ["1.0.0_b2", "1.0.0"])
def test_build_metadata_variant_promoted_after_the_same_version_is_refused(
    stores: dict[str, MemoryStore], promoted_tag: str
) -> None:
    plan = plan_for(signed_bundle(stores, version="1.0.0+b1"))
    assert plan.chart_tag == "1.0.0_b1"
    with pytest.raises(RollbackError, match="only in build metadata"):
        check_rollback(plan, {promoted_tag: Digest.of(b"other chart")}, allow_downgrade=False)
    check_rollback(plan, {promoted_tag: Digest.of(b"other chart")}, allow_downgrade=True)


# ------------------------------------------------------------------------ duplicate keys
def _policy_file(tmp_path: Path, bundles: str) -> Path:
    (tmp_path / "vendor.pub").write_bytes(VENDOR.public.pem)
    path = tmp_path / "policy.yaml"
    path.write_text(
        "apiVersion: bundler.dev/v1\nkind: TrustPolicy\n"
        "keys:\n  - name: vendor\n    role: vendor\n    path: vendor.pub\n"
        "  - name: approver\n    role: approval\n    path: approver.pub\n"
        f"bundles:\n{bundles}"
    )
    (tmp_path / "approver.pub").write_bytes(memory_bundles.APPROVER.public.pem)
    return path


def test_second_require_key_in_a_policy_rule_is_refused(tmp_path: Path) -> None:
    path = _policy_file(
        tmp_path,
        "  - name: demo\n    require:\n      - role: approval\n"
        "    require:\n      - role: vendor\n",
    )
    with pytest.raises(ConfigError, match=r"line 14: duplicate key 'require'"):
        load_trust_policy(path)


def test_two_policy_rules_for_one_bundle_name_are_refused(tmp_path: Path) -> None:
    path = _policy_file(
        tmp_path,
        "  - name: demo\n    require:\n      - role: vendor\n"
        "  - name: demo\n    require:\n      - role: approval\n",
    )
    with pytest.raises(ConfigError, match="bundle rules named twice: demo"):
        load_trust_policy(path)


def test_duplicate_name_in_bundle_config_metadata_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bundle.yaml"
    path.write_text(
        "apiVersion: bundler.dev/v1\nkind: Bundle\nmetadata: {name: demo, name: evil}\n"
        "chart:\n  path: chart\n"
    )
    with pytest.raises(ConfigError, match="line 3: duplicate key 'name'"):
        load_bundle_config(path)


def test_merge_key_overrides_are_still_read() -> None:
    import yaml

    from bundler.adapters.yamlbounds import UniqueKeySafeLoader

    text = "a: &a {x: 1, y: 2}\nb:\n  <<: *a\n  x: 3\n"
    doc = yaml.load(text, Loader=UniqueKeySafeLoader)
    assert doc["b"] == {"x": 3, "y": 2}


# ------------------------------------------------------- import checks what is already there
def test_same_size_altered_blob_already_at_the_target_is_rewritten_not_trusted(
    stores: dict[str, MemoryStore],
) -> None:
    bundle = signed_bundle(stores)
    import_bundle(bundle.location, INTERNAL, transports(stores), policy())
    layer = bundle.images[WEB_REF].layers[-1].digest
    stores["internal"].replace_blob(layer, b"X" * len(bundle.blobs[layer]))
    again = import_bundle(bundle.location, INTERNAL, transports(stores), policy())
    assert stores["internal"].blobs()[layer] == bundle.blobs[layer]
    assert again.copy.blobs_copied == 1


def test_delta_whose_base_blob_at_the_target_is_altered_is_refused(
    stores: dict[str, MemoryStore],
) -> None:
    from bundler.services.transfer import export

    old = signed_bundle(stores, "v1", version="1.0.0")
    new = signed_bundle(stores, "v2", version="1.1.0", web_seed="web 1.1")
    import_bundle(old.location, INTERNAL, transports(stores), policy())
    archive = memory_location("archive")
    export(new.location, archive, transports(stores), base=old.location)
    shared = sorted(set(old.blobs) & set(new.blobs))[0]  # left out of the delta
    stores["internal"].replace_blob(shared, b"Y" * len(old.blobs[shared]))
    with pytest.raises(NotFoundError) as caught:
        import_bundle(archive, INTERNAL, transports(stores), policy())
    assert str(shared) in str(caught.value)
    assert stores["internal"].names().get(new.tag) is None
