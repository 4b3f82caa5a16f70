"""The verify orchestrator and inspection, against bundles held in memory stores.

Each test builds a real, signed bundle in a :class:`MemoryStore`, changes one thing, and checks
which of the six steps of docs/verification.md refuses it, what the report records, and the
exit-code family the command line would use.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from memory_bundles import (
    API_REF,
    APPROVER,
    LAYER,
    STRANGER,
    VENDOR,
    WEB_REF,
    MemoryBundle,
    build_bundle,
    image,
    policy,
    signed_bundle,
    transports,
    write,
)

from bundler.adapters.memory import MemoryStore
from bundler.adapters.stream import VerifiedStream
from bundler.cli.main import exit_code_for
from bundler.errors import NotFoundError
from bundler.model import mediatypes as mt
from bundler.model.bundle import LOCK_MEDIA_TYPE, Blob
from bundler.model.policy import Requirement, TrustPolicy, single_key_policy
from bundler.model.signature import cosign_signature_tag
from bundler.services.inspect import inspect
from bundler.services.overlay import OverlaySource
from bundler.services.sign import sign
from bundler.services.transports import memory_location
from bundler.services.verify import (
    VerifyReport,
    check_signatures,
    extra_content,
    open_for_verification,
    verify,
)


def failed_at(report: VerifyReport, step: int) -> str:
    """The report failed at ``step``: earlier steps passed, later ones did not run."""
    assert report.bundle is None
    assert report.error is not None and report.error.step == step, report.error
    assert exit_code_for(report.error) == 12
    statuses = {s["step"]: s["status"] for s in report.to_json()["steps"]}
    assert statuses == {
        n: "passed" if n < step else "failed" if n == step else "not run" for n in range(1, 7)
    }
    return str(report.error)


def run(bundle: MemoryBundle, **policy_args: object) -> VerifyReport:
    return verify(bundle.store.source(bundle.tag), policy(**policy_args))  # type: ignore[arg-type]


@pytest.fixture
def stores() -> dict[str, MemoryStore]:
    return {}


def test_a_signed_bundle_passes_all_six_steps(stores: dict[str, MemoryStore]) -> None:
    bundle = signed_bundle(stores)
    report = run(bundle)
    assert report.error is None and report.bundle is not None
    assert report.steps == {n: ("passed", "") for n in range(1, 7)}
    assert report.digest == bundle.index.digest == report.bundle.digest
    assert (report.bundle.name, report.bundle.version) == ("demo", "1.0.0")
    doc = report.to_json()
    assert doc["verified"] is True
    assert [s["key"] for s in doc["bundle"]["signers"]] == ["vendor-release"]
    assert {i["reference"] for i in doc["bundle"]["images"]} == {WEB_REF, API_REF}


def test_step1_an_image_is_not_a_bundle_where_only_a_bundle_will_do(
    stores: dict[str, MemoryStore],
) -> None:
    bundle = signed_bundle(stores)
    report = verify(bundle.store.source(WEB_REF), policy(), bundles_only=True)
    assert "not a bundle" in failed_at(report, 1)


IMAGE_STEPS = {
    1: "not applicable",
    2: "passed",
    3: "not applicable",
    4: "passed",
    5: "passed",
    6: "not applicable",
}


def test_a_plain_image_sign_signed_verifies_as_cosign_verify_does(
    stores: dict[str, MemoryStore],
) -> None:
    bundle = signed_bundle(stores)  # signed recursively: the images carry the signature too
    report = verify(bundle.store.source(WEB_REF), single_key_policy(VENDOR.public, "vendor"))
    assert report.error is None and report.bundle is None and report.image is not None
    assert report.kind == "image" and report.image.digest == bundle.images[WEB_REF].digest
    doc = report.to_json()
    assert doc["verified"] is True and doc["kind"] == "image"
    assert {s["step"]: s["status"] for s in doc["steps"]} == IMAGE_STEPS
    assert [s["key"] for s in doc["image"]["signers"]] == ["vendor"]
    # A policy file's rule is matched by the repository's last component.
    assert verify(bundle.store.source(WEB_REF), policy(name="web")).image is not None


def test_a_plain_image_without_a_trusted_signature_fails_step2(
    stores: dict[str, MemoryStore],
) -> None:
    bundle = build_bundle(stores)  # not signed
    report = verify(bundle.store.source(WEB_REF), single_key_policy(VENDOR.public))
    assert report.image is None and report.error is not None and report.error.step == 2
    assert "image" in str(report.error) and "not signed" in str(report.error)


def test_a_plain_image_under_a_versioned_rule_fails_step4(stores: dict[str, MemoryStore]) -> None:
    bundle = signed_bundle(stores)
    report = verify(bundle.store.source(WEB_REF), policy(name="web", versions=">=1.0.0"))
    assert report.error is not None and report.error.step == 4
    assert "has no version" in str(report.error)
    assert report.steps[2] == ("passed", "")


def test_a_plain_image_with_a_missing_layer_fails_step5(stores: dict[str, MemoryStore]) -> None:
    bundle = signed_bundle(stores)
    layer = bundle.images[WEB_REF].layers[-1].digest
    bundle.store.delete_blob(layer)
    report = verify(bundle.store.source(WEB_REF), single_key_policy(VENDOR.public))
    assert report.error is not None and report.error.step == 5
    assert str(layer) in str(report.error)


def test_a_store_that_is_not_there_is_not_found_rather_than_tampered(
    stores: dict[str, MemoryStore],
) -> None:
    with pytest.raises(NotFoundError):
        open_for_verification(transports(stores), memory_location("nowhere"))


def test_step2_an_unsigned_bundle_is_refused(stores: dict[str, MemoryStore]) -> None:
    bundle = build_bundle(stores)
    assert "signature" in failed_at(run(bundle), 2)


def test_step2_a_signature_by_an_untrusted_key_does_not_count(
    stores: dict[str, MemoryStore],
) -> None:
    bundle = signed_bundle(stores, keys=(STRANGER,))
    failed_at(run(bundle), 2)


def test_step2_a_signature_moved_from_another_bundle_does_not_count(
    stores: dict[str, MemoryStore],
) -> None:
    other = signed_bundle(stores, "other", version="2.0.0")
    bundle = build_bundle(stores)
    moved = other.store.source(cosign_signature_tag(other.index.digest))
    signature = moved.fetch_manifest(moved.resolve())
    payloads = {d.digest: other.store.blobs()[d.digest] for d in signature.blobs()}
    write(
        bundle.store, [signature], payloads, {cosign_signature_tag(bundle.index.digest): signature}
    )
    failed_at(run(bundle), 2)


def test_step3_a_missing_lock_blob_is_refused_before_any_image_blob_is_read(
    stores: dict[str, MemoryStore],
) -> None:
    bundle = signed_bundle(stores)
    assert bundle.store.delete_blob(bundle.blob_of(LOCK_MEDIA_TYPE))
    assert "cannot read the lock" in failed_at(run(bundle), 3)


def test_an_unsigned_bundle_without_its_lock_blob_fails_step2_and_runs_no_later_step(
    stores: dict[str, MemoryStore],
) -> None:
    """Steps run in order: the lock that cannot be read is not judged before the signatures."""
    bundle = build_bundle(stores)
    assert bundle.store.delete_blob(bundle.blob_of(LOCK_MEDIA_TYPE))
    assert "not signed" in failed_at(run(bundle), 2)


def test_step4_a_version_outside_the_rule_is_refused(stores: dict[str, MemoryStore]) -> None:
    bundle = signed_bundle(stores)
    assert "1.0.0" in failed_at(run(bundle, versions=">=2.0.0"), 4)


def test_step4_no_rule_for_the_bundle_name_is_refused(stores: dict[str, MemoryStore]) -> None:
    bundle = signed_bundle(stores)
    failed_at(run(bundle, name="another-*"), 4)


def test_step4_a_missing_approval_is_refused_and_given_passes(
    stores: dict[str, MemoryStore],
) -> None:
    vendor_only = signed_bundle(stores)
    assert "approval" in failed_at(run(vendor_only, approval=True), 4)
    both = signed_bundle(stores, "approved", keys=(VENDOR, APPROVER))
    report = run(both, approval=True)
    assert report.bundle is not None, report.error
    assert sorted(s.role for s in report.bundle.signers) == ["approval", "vendor"]


def test_step4_an_identity_the_signatures_do_not_name_is_refused(
    stores: dict[str, MemoryStore],
) -> None:
    bundle = signed_bundle(stores)  # signed naming the bundle's title, "demo"
    failed_at(run(bundle, identity="registry.example/someone/else"), 4)


def test_steps_1_to_4_read_no_image_blob(stores: dict[str, MemoryStore]) -> None:
    bundle = signed_bundle(stores)
    for manifest in bundle.images.values():
        for layer in manifest.layers:
            bundle.store.delete_blob(layer.digest)
    signed = check_signatures(bundle.store.source(bundle.tag), policy())
    assert signed.index.digest == bundle.index.digest
    assert "blob is missing" in failed_at(run(bundle), 5)


def test_step5_a_missing_layer_is_named(stores: dict[str, MemoryStore]) -> None:
    bundle = signed_bundle(stores)
    layer = bundle.images[WEB_REF].layers[-1].digest
    bundle.store.delete_blob(layer)
    message = failed_at(run(bundle), 5)
    assert str(layer) in message and "missing" in message


def test_step5_an_altered_chart_archive_is_named(stores: dict[str, MemoryStore]) -> None:
    bundle = signed_bundle(stores)
    archive = bundle.blob_of(mt.HELM_CHART)
    original = bundle.store.blobs()[archive]
    bundle.store.replace_blob(archive, original[:-1] + bytes([original[-1] ^ 1]))
    message = failed_at(run(bundle), 5)
    assert str(archive) in message


def test_step5_an_altered_image_manifest_is_named(stores: dict[str, MemoryStore]) -> None:
    bundle = signed_bundle(stores)
    web = bundle.images[WEB_REF]
    bundle.store.replace_blob(web.digest, web.raw.replace(b'"schemaVersion"', b'"schemaVersion" '))
    assert str(web.digest) in failed_at(run(bundle), 5)


def test_step6_a_stray_blob_is_named(stores: dict[str, MemoryStore]) -> None:
    bundle = signed_bundle(stores)
    stray = Blob.of(LAYER, b"smuggled")
    target = bundle.store.target()
    target.put_blob(VerifiedStream([stray.data], stray.descriptor, "test"))
    assert f"blob {stray.descriptor.digest}" in failed_at(run(bundle), 6)


def test_step6_a_smuggled_image_under_its_own_name_is_named(
    stores: dict[str, MemoryStore],
) -> None:
    bundle = signed_bundle(stores)
    smuggled, blobs = image("smuggled")
    write(bundle.store, [smuggled], blobs, {"evil.example/miner:1": smuggled})
    message = failed_at(run(bundle), 6)
    assert f"name evil.example/miner:1 -> {smuggled.digest}" in message


def test_step6_an_image_name_moved_to_other_content_is_named(
    stores: dict[str, MemoryStore],
) -> None:
    bundle = signed_bundle(stores)
    other, blobs = image("other")
    write(bundle.store, [other], blobs, {WEB_REF: other})
    assert f"name {WEB_REF} -> {other.digest}" in failed_at(run(bundle), 6)


def test_extra_content_accounts_for_signatures_and_pinned_names(
    stores: dict[str, MemoryStore],
) -> None:
    bundle = signed_bundle(stores, keys=(VENDOR, APPROVER))
    source = bundle.store.source(bundle.tag)
    manifests = {m.digest: m for m in bundle.manifests()}
    assert extra_content(source, bundle.index, manifests, set(bundle.blobs)) == []
    # A signature is expected only beside a manifest the bundle covers: with the api image
    # left out of what was verified, its signature tag is extra; its pinned name is not.
    api = bundle.images[API_REF].digest
    del manifests[api]
    extra = extra_content(source, bundle.index, manifests, set(bundle.blobs))
    assert [e.split(" -> ")[0] for e in extra if e.startswith("name ")] == [
        f"name {cosign_signature_tag(api)}"
    ]
    # Only a layout (directory, archive or memory store) has "extra" content to list.
    overlay = OverlaySource(source)
    assert extra_content(overlay, bundle.index, manifests, set()) == []


def test_inspect_lists_images_signatures_and_unique_bytes(stores: dict[str, MemoryStore]) -> None:
    bundle = signed_bundle(stores)
    result = inspect(bundle.store.source(bundle.tag))
    assert result.is_bundle and (result.name, result.version) == ("demo", "1.0.0")
    assert [i.reference for i in result.images] == sorted([API_REF, WEB_REF])
    assert result.images[1].value_paths == ["web.image"]
    assert [(s.kind, s.tag) for s in result.signatures] == [
        ("cosign-tag", cosign_signature_tag(bundle.index.digest))
    ]
    # The base layer both images share is counted once in the unique bytes, twice in total.
    shared = bundle.images[WEB_REF].layers[0]
    assert shared == bundle.images[API_REF].layers[0]
    assert result.total_bytes - result.unique_bytes == shared.size


def test_inspect_of_an_image_is_not_a_bundle(stores: dict[str, MemoryStore]) -> None:
    bundle = build_bundle(stores)
    result = inspect(bundle.store.source(WEB_REF))
    assert not result.is_bundle and result.lock is None
    assert [i.reference for i in result.images] == [WEB_REF]


def _image_rule_policy() -> TrustPolicy:
    """The vendor signs the bundle, and each image must carry a vendor signature of its own."""
    base = policy()
    rule = replace(base.rules[0], images=(Requirement("vendor"),))
    return replace(base, rules=(rule,))


def test_step4_a_rule_may_require_every_image_to_carry_its_own_signature(
    stores: dict[str, MemoryStore],
) -> None:
    bundle = signed_bundle(stores)  # signed recursively: every image carries the signature
    report = verify(bundle.store.source(bundle.tag), _image_rule_policy())
    assert report.error is None and report.bundle is not None


def test_step4_an_image_without_the_signature_a_rule_requires_is_named(
    stores: dict[str, MemoryStore],
) -> None:
    bundle = build_bundle(stores)
    sign(bundle.location, VENDOR, transports(stores), recursive=False)  # the index only
    assert run(bundle).bundle is not None  # the plain rule is met
    message = failed_at(verify(bundle.store.source(bundle.tag), _image_rule_policy()), 4)
    assert "on every image" in message and "has none" in message
    assert API_REF in message or WEB_REF in message
