"""Promotions that must not re-point what is already promoted, doubled by a crash, or raced.

The internal side is a memory store (or a layout directory where a lock is needed) served as
``registry.internal/apps``, as in test_promote_service.py.
"""

from __future__ import annotations

import json

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
from bundler.adapters.memory import MemoryStore
from bundler.errors import RollbackError
from bundler.model import mediatypes as mt
from bundler.model.digest import Digest
from bundler.model.reference import Reference
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
