"""Signed bundles built in memory, for the unit tests of the services.

A bundle here is the real thing, only small: a Helm chart packaged by bundler's own chart
adapter (values naming both images, one as a string, one as a map), two images sharing a base
layer, the lock, and the index, written through a :class:`MemoryTarget` into a
:class:`MemoryStore` and signed by the sign service, so every byte is what ``bundler pack`` and
``bundler sign`` would produce for such a chart.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from bundler.adapters.chart import load_chart_archive, package_files
from bundler.adapters.crypto import PrivateKey, generate_key
from bundler.adapters.memory import MemoryStore
from bundler.adapters.stream import VerifiedStream
from bundler.model import mediatypes as mt
from bundler.model.bundle import (
    LOCK_MEDIA_TYPE,
    ROLE_CHART,
    ROLE_IMAGE,
    ROLE_LOCK,
    Blob,
    BundleEntry,
    BundleLock,
    LockedChart,
    LockedImage,
    ValuePath,
    bundle_index,
    chart_manifest,
    lock_manifest,
)
from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest
from bundler.model.manifest import Manifest, parse_manifest
from bundler.model.plan import TransferPlan
from bundler.model.policy import BundleRule, Requirement, TrustedKey, TrustPolicy, VersionRange
from bundler.services.sign import sign
from bundler.services.transports import Location, Transports, memory_location

NAME = "demo"
WEB_REF = "example.local/demo/web:1.0.0"
API_REF = "example.local/demo/api:1.0.0"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

VENDOR = generate_key("ecdsa-p256")
APPROVER = generate_key("ed25519")
STRANGER = generate_key("ecdsa-p256")


@dataclass(frozen=True)
class MemoryBundle:
    """A bundle written into a memory store, with every part of it at hand."""

    store: MemoryStore
    store_name: str
    tag: str
    index: Manifest
    chart: Manifest
    lock: BundleLock
    lock_manifest: Manifest
    images: dict[str, Manifest]
    blobs: dict[Digest, bytes]  # every blob under the index: configs, layers, chart, lock

    @property
    def location(self) -> Location:
        """Where the bundle is: ``memory:STORE:NAME:VERSION``."""
        return memory_location(self.store_name, self.tag)

    def blob_of(self, media_type: str) -> Digest:
        """The digest of the one blob under the index with ``media_type``."""
        found = [
            d.digest for m in self.manifests() for d in m.blobs() if d.media_type == media_type
        ]
        assert len(set(found)) == 1, found
        return found[0]

    def manifests(self) -> list[Manifest]:
        """Every manifest under the index, the index last."""
        return [self.chart, *self.images.values(), self.lock_manifest, self.index]


def image(seed: str, base: bytes = b"shared base layer") -> tuple[Manifest, dict[Digest, bytes]]:
    """An image manifest with its config, its own layer and a base layer others may share."""
    config = Blob.of(mt.OCI_CONFIG, json.dumps({"seed": seed, "rootfs": {}}).encode())
    own = Blob.of(LAYER, f"layer of {seed}".encode())
    shared = Blob.of(LAYER, base)
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": config.descriptor.to_json(),
        "layers": [shared.descriptor.to_json(), own.descriptor.to_json()],
    }
    manifest = parse_manifest(json.dumps(doc).encode(), media_type=mt.OCI_MANIFEST)
    blobs = {b.descriptor.digest: b.data for b in (config, own, shared)}
    return manifest, blobs


def chart_archive(name: str, version: str) -> bytes:
    """A packaged chart whose values name the web image as a string and the api image as a map."""
    files = {
        "Chart.yaml": (
            f"apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: '{version}'\n"
            "description: a chart for unit tests\n"
        ).encode(),
        "values.yaml": (
            f"web:\n  image: {WEB_REF}\n"
            "api:\n  image:\n    repository: example.local/demo/api\n    tag: 1.0.0\n"
        ).encode(),
        "templates/deploy.yaml": (
            b"containers:\n- image: {{ .Values.web.image }}\n"
            b"- image: {{ .Values.api.image.repository }}:{{ .Values.api.image.tag }}\n"
        ),
    }
    return package_files(name, files)


def write(
    store: MemoryStore,
    manifests: Sequence[Manifest],
    blobs: dict[Digest, bytes],
    names: dict[str, Manifest],
) -> None:
    """Put blobs, then manifests, then names into ``store`` through its target, as a copy does."""
    target = store.target()
    target.begin(TransferPlan(root=manifests[-1].descriptor()))
    for digest, data in blobs.items():
        descriptor = Descriptor("application/octet-stream", digest, len(data))
        target.put_blob(VerifiedStream([data], descriptor, "test"))
    for manifest in manifests:
        target.put_manifest(manifest)
    for tag, manifest in names.items():
        target.tag(tag, manifest)
    target.commit()


def build_bundle(
    stores: dict[str, MemoryStore],
    store_name: str = "vendor",
    *,
    name: str = NAME,
    version: str = "1.0.0",
    web_seed: str = "web",
) -> MemoryBundle:
    """Write an unsigned bundle ``NAME:VERSION`` into ``stores[store_name]`` (made if absent).

    The images are also named by their references, as a copy into a layout names them.
    """
    store = stores.setdefault(store_name, MemoryStore(store_name))
    blobs: dict[Digest, bytes] = {}
    archive_data = chart_archive(name, version)
    chart = load_chart_archive(archive_data, "unit chart")
    config = Blob.of(mt.HELM_CONFIG, chart.metadata.config_json())
    archive = Blob.of(mt.HELM_CHART, archive_data)
    chart_m = chart_manifest(config, archive, {})
    blobs.update({config.descriptor.digest: config.data, archive.descriptor.digest: archive_data})
    images: dict[str, Manifest] = {}
    for ref, seed in ((API_REF, "api"), (WEB_REF, web_seed)):
        manifest, image_blobs = image(seed)
        images[ref] = manifest
        blobs.update(image_blobs)
    value_paths = {
        WEB_REF: (ValuePath("web.image", "string"),),
        API_REF: (ValuePath("api.image", "map"),),
    }
    lock = BundleLock(
        name=name,
        version=version,
        chart=LockedChart(
            name, version, version, chart_m.digest, archive.descriptor.digest, "directory"
        ),
        images=tuple(
            LockedImage(
                ref,
                m.digest,
                mt.OCI_MANIFEST,
                m.size + sum(d.size for d in m.blobs()),
                ("linux/amd64",),
                value_paths[ref],
                ("values",),
            )
            for ref, m in sorted(images.items())
        ),
        rendered=True,
    )
    lock_blob = Blob.of(LOCK_MEDIA_TYPE, lock.to_bytes())
    lock_m = lock_manifest(lock_blob)
    assert lock_m.config is not None
    blobs.update({lock_blob.descriptor.digest: lock_blob.data, lock_m.config.digest: b"{}"})
    entries = [
        BundleEntry(ROLE_CHART, chart_m),
        *(BundleEntry(ROLE_IMAGE, m, image_ref=ref) for ref, m in sorted(images.items())),
        BundleEntry(ROLE_LOCK, lock_m),
    ]
    index = bundle_index(entries, {"org.opencontainers.image.title": name})
    tag = f"{name}:{version}"
    manifests = [chart_m, *images.values(), lock_m, index]
    write(store, manifests, blobs, {tag: index, **images})
    return MemoryBundle(store, store_name, tag, index, chart_m, lock, lock_m, images, blobs)


def sign_bundle(
    stores: dict[str, MemoryStore], bundle: MemoryBundle, key: PrivateKey = VENDOR
) -> None:
    """Sign the bundle (and, as ``cosign sign --recursive`` does, all it pins) where it is."""
    sign(bundle.location, key, Transports(use_blob_cache=False, memory=stores))


def signed_bundle(
    stores: dict[str, MemoryStore],
    store_name: str = "vendor",
    *,
    version: str = "1.0.0",
    web_seed: str = "web",
    keys: Sequence[PrivateKey] = (VENDOR,),
) -> MemoryBundle:
    """A bundle signed by each of ``keys`` in turn."""
    bundle = build_bundle(stores, store_name, version=version, web_seed=web_seed)
    for key in keys:
        sign_bundle(stores, bundle, key)
    return bundle


def policy(
    *,
    versions: str | None = None,
    name: str = NAME,
    approval: bool = False,
    identity: str | None = None,
) -> TrustPolicy:
    """VENDOR trusted as ``vendor`` (and APPROVER as ``approval``); one rule for ``name``."""
    require = (Requirement("vendor"), *((Requirement("approval"),) if approval else ()))
    return TrustPolicy(
        keys=(
            TrustedKey("vendor-release", "vendor", VENDOR.public),
            TrustedKey("secops", "approval", APPROVER.public),
        ),
        rules=(
            BundleRule(
                name,
                require,
                VersionRange.parse(versions) if versions else None,
                identity,
            ),
        ),
        origin="unit policy",
    )


def transports(stores: dict[str, MemoryStore]) -> Transports:
    """Transports over ``stores`` and nothing on disk (no blob-location cache)."""
    return Transports(use_blob_cache=False, memory=stores)
