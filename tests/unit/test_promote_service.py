"""Promotion decisions against memory stores: the relocation plan, rollback protection,
idempotent re-runs, and what the internal side holds afterwards.

The internal side is a memory store served as ``registry.internal/apps`` (as ``oci:DIR`` with
``--serve-as``), so the names checked are the ones a registry would hold.
"""

from __future__ import annotations

import pytest
from memory_bundles import (
    API_REF,
    WEB_REF,
    MemoryBundle,
    build_bundle,
    image,
    policy,
    signed_bundle,
    transports,
    write,
)

from bundler.adapters.chart import load_chart_archive
from bundler.adapters.crypto import generate_key
from bundler.adapters.memory import MemoryStore
from bundler.cli.main import exit_code_for
from bundler.errors import RollbackError, UsageError, VerificationError
from bundler.model import mediatypes as mt
from bundler.model.digest import Digest
from bundler.model.reference import Reference
from bundler.services.promote import (
    PromotionPlan,
    PromotionResult,
    check_rollback,
    plan_promotion,
    promote,
    verify_promotion,
)
from bundler.services.transports import memory_location
from bundler.services.verify import verify

REGISTRY, PREFIX = "registry.internal", "apps"
SERVE_AS = Reference.parse(f"{REGISTRY}/{PREFIX}", default_tag=False)
INTERNAL = memory_location("internal")
PROMOTER = generate_key("ecdsa-p256")
CHART = f"{REGISTRY}/{PREFIX}/demo"


@pytest.fixture
def stores() -> dict[str, MemoryStore]:
    return {}


def promoted(
    stores: dict[str, MemoryStore], bundle: MemoryBundle, **options: object
) -> PromotionResult:
    return promote(
        bundle.location,
        INTERNAL,
        transports(stores),
        policy(),
        PROMOTER,
        serve_as=SERVE_AS,
        parallel=1,
        **options,  # type: ignore[arg-type]
    )


def snapshot(store: MemoryStore) -> tuple[dict[str, Digest], set[Digest]]:
    return store.names(), set(store.blobs())


def plan_for(bundle: MemoryBundle, *, mirror: bool = False) -> PromotionPlan:
    source = bundle.store.source(bundle.tag)
    report = verify(source, policy())
    assert report.bundle is not None, report.error
    return plan_promotion(source, report.bundle, REGISTRY, PREFIX, style="nested", mirror=mirror)


def test_the_plan_relocates_each_image_and_pins_the_chart_values(
    stores: dict[str, MemoryStore],
) -> None:
    bundle = signed_bundle(stores)
    plan = plan_for(bundle)
    web, api = bundle.images[WEB_REF].digest, bundle.images[API_REF].digest
    assert sorted(r.pinned for r in plan.relocations) == sorted(
        [
            f"{REGISTRY}/{PREFIX}/demo/web:1.0.0@{web}",
            f"{REGISTRY}/{PREFIX}/demo/api:1.0.0@{api}",
        ]
    )
    assert (plan.chart_repository, plan.chart_tag) == (f"{PREFIX}/demo", "1.0.0")
    assert plan.values_changed == ["api.image", "web.image"]
    layer = next(d for d in plan.chart.layers if d.media_type == mt.HELM_CHART)
    values = load_chart_archive(plan.chart_blobs[layer.digest], "promoted").values
    assert values["web"]["image"] == f"{REGISTRY}/{PREFIX}/demo/web:1.0.0@{web}"
    assert values["api"]["image"] == {
        "repository": f"{REGISTRY}/{PREFIX}/demo/api",
        "tag": f"1.0.0@{api}",
    }
    assert plan.chart.annotations["dev.bundler.bundle"] == str(bundle.index.digest)
    assert plan.chart.digest != bundle.chart.digest


def test_mirror_mode_keeps_the_vendor_chart_and_maps_hosts(
    stores: dict[str, MemoryStore],
) -> None:
    bundle = signed_bundle(stores)
    plan = plan_for(bundle, mirror=True)
    assert plan.chart.digest == bundle.chart.digest and plan.chart_blobs == {}
    assert plan.hosts == {"example.local": f"{REGISTRY}/{PREFIX}/example.local"}
    assert plan.values_changed == []


def test_promote_writes_images_chart_and_a_signed_record(stores: dict[str, MemoryStore]) -> None:
    bundle = signed_bundle(stores)
    result = promoted(stores, bundle)
    assert result.record_digest is not None and not result.plan.already_promoted
    names = stores["internal"].names()
    assert names[f"{CHART}/web:1.0.0"] == bundle.images[WEB_REF].digest
    assert names[f"{CHART}/api:1.0.0"] == bundle.images[API_REF].digest
    assert names[f"{CHART}:1.0.0"] == result.plan.chart.digest
    assert not any(name.endswith(".sig") for name in names)  # vendor signatures stay behind
    record = verify_promotion(stores["internal"].source(f"{CHART}:1.0.0"), PROMOTER.public)
    assert record["bundle"]["digest"] == str(bundle.index.digest)
    assert record["chart"]["digest"] == str(result.plan.chart.digest)
    with pytest.raises(VerificationError) as caught:
        verify_promotion(stores["internal"].source(f"{CHART}:1.0.0"), generate_key().public)
    assert caught.value.step == 2


def test_a_second_promotion_of_the_same_bundle_writes_nothing(
    stores: dict[str, MemoryStore],
) -> None:
    bundle = signed_bundle(stores)
    promoted(stores, bundle)
    before = snapshot(stores["internal"])
    again = promoted(stores, bundle)
    assert again.plan.already_promoted and again.record_digest is None
    assert snapshot(stores["internal"]) == before


def test_an_unverified_bundle_is_not_promoted(stores: dict[str, MemoryStore]) -> None:
    bundle = build_bundle(stores)
    with pytest.raises(VerificationError) as caught:
        promoted(stores, bundle)
    assert caught.value.step == 2
    assert "internal" not in stores


def test_an_older_version_is_refused_unless_allowed(stores: dict[str, MemoryStore]) -> None:
    newer = signed_bundle(stores, "v2", version="1.1.0")
    older = signed_bundle(stores, "v1", version="1.0.0")
    promoted(stores, newer)
    before = snapshot(stores["internal"])
    with pytest.raises(RollbackError) as caught:
        promoted(stores, older)
    assert exit_code_for(caught.value) == 14 and "--allow-downgrade" in str(caught.value)
    assert snapshot(stores["internal"]) == before
    rolled_back = promoted(stores, older, allow_downgrade=True)
    assert stores["internal"].names()[f"{CHART}:1.0.0"] == rolled_back.plan.chart.digest


def test_a_newer_version_is_promoted_beside_the_older(stores: dict[str, MemoryStore]) -> None:
    promoted(stores, signed_bundle(stores, "v1", version="1.0.0"))
    newer = promoted(stores, signed_bundle(stores, "v2", version="1.1.0"))
    names = stores["internal"].names()
    assert {f"{CHART}:1.0.0", f"{CHART}:1.1.0"} <= set(names)
    assert names[f"{CHART}:1.1.0"] == newer.plan.chart.digest


def test_the_same_version_with_other_content_is_refused(stores: dict[str, MemoryStore]) -> None:
    promoted(stores, signed_bundle(stores, "first"))
    before = snapshot(stores["internal"])
    changed = signed_bundle(stores, "second", web_seed="rebuilt web")
    with pytest.raises(RollbackError, match="already promoted with other content"):
        promoted(stores, changed)
    assert snapshot(stores["internal"]) == before


def test_mirror_mode_refuses_the_same_chart_with_other_images(
    stores: dict[str, MemoryStore],
) -> None:
    bundle = signed_bundle(stores)
    promoted(stores, bundle, mirror=True)
    other, blobs = image("moved")
    write(
        stores["internal"],
        [other],
        blobs,
        {f"{REGISTRY}/{PREFIX}/example.local/demo/web:1.0.0": other},
    )
    with pytest.raises(RollbackError, match="already promoted with other images"):
        promoted(stores, bundle, mirror=True)


def test_a_target_without_a_serving_name_is_a_usage_error(
    stores: dict[str, MemoryStore],
) -> None:
    bundle = signed_bundle(stores)
    with pytest.raises(UsageError, match="--serve-as"):
        promote(bundle.location, INTERNAL, transports(stores), policy(), PROMOTER)


# ------------------------------------------------------------------ check_rollback, each branch
@pytest.fixture
def plan(stores: dict[str, MemoryStore]) -> PromotionPlan:
    return plan_for(signed_bundle(stores, version="1.2.0"))


def test_rollback_nothing_promoted_yet(plan: PromotionPlan) -> None:
    check_rollback(plan, {}, allow_downgrade=False)
    assert not plan.already_promoted


def test_rollback_same_version_same_chart_is_idempotent(plan: PromotionPlan) -> None:
    check_rollback(plan, {"1.2.0": plan.chart.digest, "1.3.0": None}, allow_downgrade=False)
    assert plan.already_promoted  # checked before newer versions: a re-run is not a rollback


@pytest.mark.parametrize("existing", [Digest.of(b"another chart"), None])
def test_rollback_same_version_other_or_unknown_chart_is_refused(
    plan: PromotionPlan, existing: Digest | None
) -> None:
    with pytest.raises(RollbackError) as caught:
        check_rollback(plan, {"1.2.0": existing}, allow_downgrade=True)
    assert str(existing or "unknown") in str(caught.value)
    assert not plan.already_promoted


def test_rollback_newer_promoted_is_refused_unless_allowed(plan: PromotionPlan) -> None:
    with pytest.raises(RollbackError, match=r"older than 1\.10\.0"):
        check_rollback(plan, {"1.1.0": None, "1.10.0": None}, allow_downgrade=False)
    check_rollback(plan, {"1.10.0": None}, allow_downgrade=True)
    assert not plan.already_promoted


def test_rollback_only_older_or_unparsable_tags(plan: PromotionPlan) -> None:
    promoted_tags: dict[str, Digest | None] = {
        "1.1.9": None,
        "1.2.0-rc.1": None,  # a pre-release of this version is older
        "latest": None,
        "sha256-abc.sig": None,
    }
    check_rollback(plan, promoted_tags, allow_downgrade=False)
    assert not plan.already_promoted


def test_rollback_build_metadata_does_not_order_versions(plan: PromotionPlan) -> None:
    # "1.2.0_build.7" is Helm's tag for 1.2.0+build.7: SemVer gives it the same precedence,
    # so it is the same version as 1.2.0, already promoted with other content.
    with pytest.raises(RollbackError, match="only in build metadata"):
        check_rollback(plan, {"1.2.0_build.7": None}, allow_downgrade=False)
    check_rollback(plan, {"1.2.0_build.7": None}, allow_downgrade=True)
    with pytest.raises(RollbackError):
        check_rollback(plan, {"1.2.1_build.1": None}, allow_downgrade=False)


def test_rollback_reads_tags_as_helm_reads_versions(plan: PromotionPlan) -> None:
    # "v1.3" is chart version 1.3.0 to Helm: newer than 1.2.0; "v1.1" and "1" are older.
    with pytest.raises(RollbackError, match=r"older than 1\.3\.0"):
        check_rollback(plan, {"v1.3": None}, allow_downgrade=False)
    check_rollback(plan, {"v1.1": None, "1": None, "1.2.0.1": None}, allow_downgrade=False)
    assert not plan.already_promoted


def test_rollback_of_a_version_with_a_v(stores: dict[str, MemoryStore]) -> None:
    plan = plan_for(signed_bundle(stores, version="v1.2.0"))
    check_rollback(plan, {"1.1.0": None, "v1.1.9": None}, allow_downgrade=False)
    with pytest.raises(RollbackError, match=r"1\.2\.0 is older than 1\.3\.0"):
        check_rollback(plan, {"1.3.0": None}, allow_downgrade=False)
