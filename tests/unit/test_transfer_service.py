"""Export and import decisions, with memory stores on both sides of the air gap.

Export: a delta against a base leaves out exactly the blobs the base has, except the lock;
every blob travels once. Import: signatures, policy and extra content are checked before any
blob moves, a delta whose target lacks what it left out is refused with nothing written, and
names are written only after all content arrived.
"""

from __future__ import annotations

import pytest
from memory_bundles import (
    API_REF,
    LAYER,
    WEB_REF,
    MemoryBundle,
    build_bundle,
    policy,
    signed_bundle,
    transports,
)

from bundler.adapters.memory import MemoryStore
from bundler.adapters.stream import VerifiedStream
from bundler.cli.main import exit_code_for
from bundler.errors import DigestMismatchError, NotFoundError, UsageError, VerificationError
from bundler.model import mediatypes as mt
from bundler.model.bundle import LOCK_MEDIA_TYPE, Blob
from bundler.model.digest import Digest
from bundler.services.transfer import ExportResult, export, import_bundle
from bundler.services.transports import Location, memory_location, parse_location

ARCHIVE = memory_location("archive")
INTERNAL = memory_location("internal")


@pytest.fixture
def stores() -> dict[str, MemoryStore]:
    return {}


def exported(
    stores: dict[str, MemoryStore], bundle: MemoryBundle, base: Location | None = None
) -> ExportResult:
    return export(bundle.location, ARCHIVE, transports(stores), base=base)


def refused_before_any_write(stores: dict[str, MemoryStore], step: int) -> None:
    with pytest.raises(VerificationError) as caught:
        import_bundle(ARCHIVE, INTERNAL, transports(stores), policy())
    assert caught.value.step == step, caught.value
    assert exit_code_for(caught.value) == 12
    assert "internal" not in stores  # the target was not even opened


def test_export_carries_every_blob_once_and_every_name(stores: dict[str, MemoryStore]) -> None:
    bundle = signed_bundle(stores)
    result = exported(stores, bundle)
    archive = stores["archive"]
    # The two images share their base layer: one blob, moved once. Beside the bundle's own
    # blobs travel the config and payload of each of the 5 signature manifests.
    assert len(bundle.blobs) == 9
    assert result.copy.blobs == result.copy.blobs_copied == 9 + 2 * 5
    assert result.omitted_bytes == 0 and result.copy.blobs_omitted == 0
    held = archive.blobs()
    assert set(bundle.blobs) <= set(held)
    assert {m.digest for m in bundle.manifests()} <= set(held)
    names = archive.names()
    assert names[bundle.tag] == bundle.index.digest
    assert names[WEB_REF] == bundle.images[WEB_REF].digest
    assert sum(name.endswith(".sig") for name in names) == 5  # the index and all it pins


def test_export_refuses_a_target_that_is_not_an_archive(stores: dict[str, MemoryStore]) -> None:
    bundle = signed_bundle(stores)
    with pytest.raises(UsageError) as caught:
        export(bundle.location, parse_location("oci:/nonexistent/x"), transports(stores))
    assert exit_code_for(caught.value) == 2
    assert "archive" not in stores


def test_a_delta_against_itself_still_carries_the_lock(stores: dict[str, MemoryStore]) -> None:
    bundle = signed_bundle(stores)
    result = exported(stores, bundle, base=bundle.location)
    lock_layer = bundle.blob_of(LOCK_MEDIA_TYPE)
    held = stores["archive"].blobs()
    assert lock_layer in held
    assert set(bundle.blobs) & set(held) == {lock_layer}
    assert result.copy.blobs_omitted == len(bundle.blobs) - 1
    assert result.omitted_bytes == sum(
        len(data) for digest, data in bundle.blobs.items() if digest != lock_layer
    )
    assert {m.digest for m in bundle.manifests()} <= set(held)  # manifests always travel


def test_a_delta_leaves_out_exactly_what_the_base_has(stores: dict[str, MemoryStore]) -> None:
    old = signed_bundle(stores, "v1", version="1.0.0")
    new = signed_bundle(stores, "v2", version="1.1.0", web_seed="web 1.1")
    result = exported(stores, new, base=old.location)
    held = stores["archive"].blobs()
    common = set(old.blobs) & set(new.blobs)
    assert common, "the api image and the shared base layer are in both"
    assert all(d not in held for d in common)
    assert set(new.blobs) - common <= set(held)
    assert result.copy.blobs_omitted == len(common)
    assert result.base == str(old.location)
    new_web_layer = new.images[WEB_REF].layers[-1].digest
    assert new_web_layer in held and new.blob_of(mt.HELM_CHART) in held


def test_import_verifies_then_writes_content_then_names(stores: dict[str, MemoryStore]) -> None:
    bundle = signed_bundle(stores)
    exported(stores, bundle)
    result = import_bundle(ARCHIVE, INTERNAL, transports(stores), policy())
    assert (result.verified.name, result.verified.digest) == ("demo", bundle.index.digest)
    internal = stores["internal"]
    assert internal.names()[bundle.tag] == bundle.index.digest
    assert set(bundle.blobs) <= set(internal.blobs())
    assert result.from_target == []
    again = import_bundle(ARCHIVE, INTERNAL, transports(stores), policy())
    assert again.copy.blobs_copied == 0 and again.copy.blobs_skipped == again.copy.blobs


def test_import_of_an_unsigned_archive_moves_nothing(stores: dict[str, MemoryStore]) -> None:
    exported(stores, build_bundle(stores))
    refused_before_any_write(stores, 2)


def test_import_against_a_policy_the_bundle_fails_moves_nothing(
    stores: dict[str, MemoryStore],
) -> None:
    exported(stores, signed_bundle(stores, version="0.9.0"))
    with pytest.raises(VerificationError) as caught:
        import_bundle(ARCHIVE, INTERNAL, transports(stores), policy(versions=">=1.0.0"))
    assert caught.value.step == 4
    assert "internal" not in stores


def test_import_refuses_extra_content_before_any_blob_moves(
    stores: dict[str, MemoryStore],
) -> None:
    exported(stores, signed_bundle(stores))
    stray = Blob.of(LAYER, b"not covered by any signature")
    stores["archive"].target().put_blob(VerifiedStream([stray.data], stray.descriptor, "test"))
    refused_before_any_write(stores, 6)


def test_import_of_a_delta_whose_target_lacks_the_base_writes_nothing(
    stores: dict[str, MemoryStore],
) -> None:
    old = signed_bundle(stores, "v1", version="1.0.0")
    new = signed_bundle(stores, "v2", version="1.1.0", web_seed="web 1.1")
    exported(stores, new, base=old.location)
    with pytest.raises(NotFoundError) as caught:
        import_bundle(ARCHIVE, INTERNAL, transports(stores), policy())
    assert exit_code_for(caught.value) == 3
    message = str(caught.value)
    missing = set(old.blobs) & set(new.blobs)
    assert f"lacks {len(missing)} of them" in message
    assert all(str(d) in message for d in missing)
    assert stores["internal"].blobs() == {} and stores["internal"].entries == []


def test_import_of_a_delta_onto_its_base_completes(stores: dict[str, MemoryStore]) -> None:
    old = signed_bundle(stores, "v1", version="1.0.0")
    new = signed_bundle(stores, "v2", version="1.1.0", web_seed="web 1.1")
    import_bundle(old.location, INTERNAL, transports(stores), policy())
    exported(stores, new, base=old.location)
    result = import_bundle(ARCHIVE, INTERNAL, transports(stores), policy())
    common = set(old.blobs) & set(new.blobs)
    assert {Digest.parse(d) for d in result.from_target} == common
    internal = stores["internal"]
    assert internal.names()[new.tag] == new.index.digest
    assert internal.names()[API_REF] == new.images[API_REF].digest
    assert set(new.blobs) <= set(internal.blobs())


def test_import_of_an_altered_blob_names_nothing(stores: dict[str, MemoryStore]) -> None:
    bundle = signed_bundle(stores)
    exported(stores, bundle)
    layer = bundle.images[WEB_REF].layers[-1].digest
    stores["archive"].replace_blob(layer, b"X" * len(bundle.blobs[layer]))
    with pytest.raises(DigestMismatchError) as caught:
        import_bundle(ARCHIVE, INTERNAL, transports(stores), policy(), parallel=1)
    assert str(layer) in str(caught.value) and exit_code_for(caught.value) == 6
    internal = stores["internal"]
    assert internal.entries == []  # no name points at the incomplete bundle
    assert layer not in internal.blobs()
