"""Promotions that must not re-point what is already promoted, doubled by a crash, or raced.

The internal side is a memory store (or a layout directory where a lock is needed) served as
``registry.internal/apps``, as in test_promote_service.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from memory_bundles import (
    WEB_REF,
    MemoryBundle,
    build_bundle,
    policy,
    sign_bundle,
    signed_bundle,
    transports,
)

from bundler.adapters.crypto import generate_key
from bundler.adapters.layout import LayoutTarget
from bundler.adapters.memory import MemoryStore
from bundler.errors import RollbackError, TransportError
from bundler.model import mediatypes as mt
from bundler.model.digest import Digest
from bundler.model.reference import Reference
from bundler.services import copy as copy_service
from bundler.services.promote import PROMOTION_MEDIA_TYPE, PromotionResult, promote
from bundler.services.transports import Location, memory_location

REGISTRY, PREFIX = "registry.internal", "apps"
SERVE_AS = Reference.parse(f"{REGISTRY}/{PREFIX}", default_tag=False)
INTERNAL = memory_location("internal")
PROMOTER = generate_key("ecdsa-p256")  # randomised signatures: a second record would differ


def promoted(
    stores: dict[str, MemoryStore],
    bundle: MemoryBundle,
    into: Location = INTERNAL,
    *,
    name: str = "demo",
    mirror: bool = False,
) -> PromotionResult:
    return promote(
        bundle.location,
        into,
        transports(stores),
        policy(name=name),
        PROMOTER,
        serve_as=SERVE_AS,
        parallel=1,
        mirror=mirror,
    )


def mirror_tag() -> str:
    web = Reference.parse(WEB_REF)
    return f"{REGISTRY}/{PREFIX}/{web.registry}/{web.repository}:{web.tag}"


def test_later_bundle_cannot_repoint_mirror_tag_of_promoted_release() -> None:
    stores: dict[str, MemoryStore] = {}
    first = signed_bundle(stores, "vendor")
    promoted(stores, first, mirror=True)
    internal = stores["internal"]
    web_before = internal.names()[mirror_tag()]
    # Another chart whose bundle pins other content under the same web:1.0.0 reference.
    other = build_bundle(stores, "other-vendor", name="other", web_seed="evil")
    sign_bundle(stores, other)
    names_before = internal.names()

    with pytest.raises(RollbackError, match="mirror tag is never moved"):
        promoted(stores, other, mirror=True, name="other")

    assert internal.names() == names_before
    assert internal.names()[mirror_tag()] == web_before


def records_of(store: MemoryStore, chart: Digest) -> list[Digest]:
    found = []
    for digest, raw in store.blobs().items():
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            continue
        if (
            isinstance(doc, dict)
            and doc.get("artifactType") == PROMOTION_MEDIA_TYPE
            and doc.get("subject", {}).get("digest") == str(chart)
            and any(e.digest == digest for e in store.entries)
        ):
            found.append(digest)
    return found


def test_promote_killed_before_version_tag_attaches_one_record_on_rerun() -> None:
    stores: dict[str, MemoryStore] = {}
    bundle = signed_bundle(stores)
    first = promoted(stores, bundle)
    internal = stores["internal"]
    chart = first.plan.chart.digest
    chart_tag = f"{REGISTRY}/{PREFIX}/demo:{first.plan.chart_tag}"
    # What a kill after the record and before the version tag leaves on a registry: the
    # record refers to the chart, the chart has no version tag.
    assert internal._index is not None
    internal._index = [
        e
        for e in internal._index
        if e.get("annotations", {}).get(mt.ANNOTATION_REF_NAME) != chart_tag
    ]

    again = promoted(stores, bundle)

    assert internal.names()[chart_tag] == chart
    assert records_of(internal, chart) == [first.record_digest]
    assert again.record_digest == first.record_digest


def _layouts_have_a_write_lock() -> bool:
    return hasattr(LayoutTarget(Path("/nonexistent/bundler-probe"), None), "write_lock")


@pytest.mark.skipif(
    not _layouts_have_a_write_lock(), reason="needs the layout write lock (adapters/layout.py)"
)
def test_concurrent_older_promotion_cannot_slip_past_a_newer_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stores: dict[str, MemoryStore] = {}
    old = signed_bundle(stores, "old", version="0.1.0")
    new = signed_bundle(stores, "new", version="0.2.0")
    layout = tmp_path / "internal"
    into = Location("oci", f"oci:{layout}", path=layout)
    monkeypatch.setattr("bundler.adapters.fsafe.LOCK_WAIT_SECONDS", 0.2)
    real_copy = copy_service.copy
    outcomes: dict[str, str] = {}

    def copy_racing(*args: Any, **kwargs: Any) -> Any:
        if "0.2.0" not in outcomes:
            # 0.2.0 runs to its end after 0.1.0 passed its rollback check and before 0.1.0
            # wrote anything: the moment both succeeded.
            outcomes["0.2.0"] = "running"
            try:
                promoted(stores, new, into)
                outcomes["0.2.0"] = "promoted"
            except (RollbackError, TransportError) as exc:
                outcomes["0.2.0"] = f"refused: {exc}"
        return real_copy(*args, **kwargs)

    monkeypatch.setattr(copy_service, "copy", copy_racing)
    try:
        promoted(stores, old, into)
        outcomes["0.1.0"] = "promoted"
    except (RollbackError, TransportError) as exc:
        outcomes["0.1.0"] = f"refused: {exc}"
    monkeypatch.undo()

    assert not (outcomes["0.1.0"] == "promoted" and outcomes["0.2.0"] == "promoted"), outcomes
