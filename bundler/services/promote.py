"""``bundler promote``: the last gate.

Only a bundle verified just now reaches the internal registry, relocated, pinned by digest, and
published as an ordinary Helm OCI chart.

1. Verify: the whole bundle against the policy (all six steps); promotion takes nothing else
   than the :class:`VerifiedBundle` that produces.
2. Plan: where each image goes (model/relocation.py), the chart's new values at the lock's value
   paths, the chart re-packaged reproducibly; rollback protection against what the internal
   registry already holds for this chart.
3. Images: copied by digest (digests re-checked while streaming), tagged with their original
   tags only after all their content is there.
4. Chart: pushed as ``PREFIX/<chart name>:<version>`` after every image it names is in place.
5. Record: a promotion record signed with the promotion key, attached to the chart as a
   referrer (tag-schema fallback on registries without the API), linking it to the vendor bundle
   digest, the signers verified and the relocation map.

Mirror mode leaves the chart byte-identical and writes containerd ``hosts.toml`` files instead.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import semver

from bundler.adapters.base import Source, Target
from bundler.adapters.chart import Chart, dump_values, load_chart_archive, package_files
from bundler.adapters.crypto import SigningKey
from bundler.adapters.fsafe import DestinationLock
from bundler.adapters.helm import Helm, find_helm
from bundler.adapters.stream import VerifiedStream, read_exact
from bundler.errors import (
    ManifestError,
    NotFoundError,
    RelocationError,
    RollbackError,
    UsageError,
)
from bundler.model import mediatypes as mt
from bundler.model.bundle import (
    ANNOTATION_DESCRIPTION,
    ANNOTATION_TITLE,
    ANNOTATION_VERSION,
    EMPTY_DESCRIPTOR,
    EMPTY_JSON,
    Blob,
    BundleView,
    canonical_json,
    chart_manifest,
    helm_tag,
)
from bundler.model.chartversion import parse_chart_version
from bundler.model.digest import Digest
from bundler.model.manifest import Manifest, parse_manifest
from bundler.model.policy import TrustPolicy
from bundler.model.reference import Reference
from bundler.model.relocation import (
    Relocation,
    coalesce_values,
    get_path,
    new_value,
    relocate,
    set_path,
)
from bundler.model.rendering import RenderSettings
from bundler.model.signature import Verifier
from bundler.services import copy as copy_service
from bundler.services.chartrewrite import prove, rewrite_chart
from bundler.services.discover import probe_values
from bundler.services.overlay import OverlaySource
from bundler.services.transports import (
    Location,
    Transports,
    memory_location,
    registry_location,
)
from bundler.services.trust import RecordFact, VerifiedBundle, check_promotion
from bundler.services.valuemap import relocation_settings
from bundler.services.verify import open_for_verification, verify

PROMOTION_MEDIA_TYPE = "application/vnd.bundler.promotion.v1+json"
PROMOTION_SIGNATURE = "dev.bundler.promotion.signature"
PROMOTION_KEY_ID = "dev.bundler.promotion.key-id"
ANNOTATION_BUNDLE = "dev.bundler.bundle"
MAX_CHART_BYTES = 20 * 1024 * 1024


@dataclass
class PromotionPlan:
    """Everything promotion will write, decided before anything moves.

    Where each image goes, the chart's repository and tag, the chart manifest and blobs (re-packaged
    with rewritten values, or the vendor's own in mirror mode), and the containerd mirror hosts.
    """

    bundle: VerifiedBundle
    registry: str
    prefix: str
    chart_repository: str
    chart_tag: str
    chart: Manifest
    chart_blobs: dict[Digest, bytes]
    relocations: list[Relocation]
    values_changed: list[str]
    mirror: bool
    already_promoted: bool = False
    hosts: dict[str, str] = field(default_factory=dict)  # upstream host -> mirror base
    how: dict[str, list[str]] = field(default_factory=dict)  # image -> how it was relocated

    def record(self) -> dict[str, Any]:
        """The promotion record: bundle, signers, chart reference and digest, relocations."""
        return {
            "schemaVersion": 1,
            "kind": "BundlePromotion",
            "bundle": {
                "name": self.bundle.name,
                "version": self.bundle.version,
                "digest": str(self.bundle.digest),
                "rule": self.bundle.rule,
            },
            "signers": [
                {"key": s.key_name, "role": s.role, "keyId": s.key_id} for s in self.bundle.signers
            ],
            "chart": {
                "reference": f"{self.registry}/{self.chart_repository}:{self.chart_tag}",
                "digest": str(self.chart.digest),
            },
            "mode": "mirror" if self.mirror else "relocate",
            "relocations": [
                {"source": r.source, "target": r.pinned, "how": self.how.get(r.source, [])}
                for r in self.relocations
            ],
            "valuesChanged": self.values_changed,
        }


@dataclass
class PromotionResult:
    """What ``promote`` did, or with ``dry_run`` would do; ``record_digest`` once signed."""

    plan: PromotionPlan
    dry_run: bool
    record_digest: Digest | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``promote --output json`` document: the record plus dry-run and idempotence flags."""
        out = self.plan.record()
        out["dryRun"] = self.dry_run
        out["alreadyPromoted"] = self.plan.already_promoted
        out["recordDigest"] = str(self.record_digest) if self.record_digest else None
        return out


def _chart_bytes(source: Source, view: BundleView) -> tuple[Manifest, bytes]:
    manifest = source.fetch_manifest(view.chart)
    layers = [x for x in manifest.layers if x.media_type == mt.HELM_CHART]
    if len(layers) != 1 or layers[0].size > MAX_CHART_BYTES:
        raise ManifestError(f"chart manifest {manifest.digest} has no single bounded chart layer")
    layer = layers[0]
    data = read_exact(VerifiedStream(source.open_blob(layer), layer, source.name), layer.size)
    return manifest, data


def _verified_index(source: Source, bundle: VerifiedBundle) -> Manifest:
    """The index that was verified: the source must still name exactly that digest."""
    root = source.resolve()
    if root.digest != bundle.digest:
        raise RollbackError(f"{source.name} changed during the promotion ({root.digest})")
    return source.fetch_manifest(root)


def plan_promotion(
    source: Source,
    bundle: VerifiedBundle,
    registry: str,
    prefix: str,
    *,
    style: str,
    mirror: bool,
    helm: Helm | None = None,
    deploy_values: dict[str, Any] | None = None,
) -> PromotionPlan:
    """Plan the promotion of ``bundle``, read again from ``source``, into ``registry/prefix``.

    RollbackError if the source no longer names the verified digest; UsageError or ConfigError for a
    layout ``style`` or value path that does not work.
    """
    index = _verified_index(source, bundle)
    view = BundleView.of(index)
    vendor_chart, archive = _chart_bytes(source, view)
    chart = load_chart_archive(archive, f"chart of bundle {bundle.digest}")
    relocations = [
        relocate(image.reference, image.digest, registry, prefix, "host" if mirror else style)
        for image in bundle.lock.images
    ]
    by_source = {r.source: r for r in relocations}
    chart_repository = f"{prefix.strip('/')}/{chart.metadata.name}".strip("/")
    tag = helm_tag(chart.metadata.version)
    if mirror:
        hosts: dict[str, str] = {}
        for r in relocations:
            upstream = Reference.parse(r.source).registry
            path = "/".join(p for p in (prefix.strip("/"), upstream.replace(":", "-").lower()) if p)
            hosts[upstream] = f"{registry}/{path}"
        return PromotionPlan(
            bundle,
            registry,
            prefix,
            chart_repository,
            tag,
            vendor_chart,
            {},
            relocations,
            [],
            True,
            hosts=hosts,
        )
    rendering = bundle.lock.rendering
    settings_values = rendering.values if rendering is not None else {}
    how: dict[str, list[str]] = {}
    if any(image.uses for image in bundle.lock.images):
        # Rendered at pack: solve each recorded composition, literals where no value controls.
        relax = relocation_settings(probe_values(chart, settings_values))
        rewrite = rewrite_chart(
            chart.values,
            chart.files,
            bundle.lock,
            by_source,
            coalesce_values(settings_values, relax),
        )
        if rewrite.problems:
            raise RelocationError(_cannot_relocate(rewrite.problems))
        files, values = rewrite.files, rewrite.values
        changed = sorted(set(rewrite.values_changed) | set(_paths(relax)))
        how = rewrite.how
    else:
        # A lock without uses (packed without rendering): the value paths it names.
        files, values, changed = _rewrite_value_paths(chart, bundle, by_source)
    files["values.yaml"] = dump_values(values)
    archive_new = package_files(chart.metadata.name, files)
    if helm is not None:
        _prove(
            helm,
            archive_new,
            chart.metadata.name,
            bundle,
            relocations,
            registry,
            prefix,
            deploy_values,
        )
    config = Blob.of(mt.HELM_CONFIG, chart.metadata.config_json())
    layer = Blob.of(mt.HELM_CHART, archive_new)
    annotations = {
        ANNOTATION_TITLE: chart.metadata.name,
        ANNOTATION_VERSION: chart.metadata.version,
        ANNOTATION_BUNDLE: str(bundle.digest),
    }
    if chart.metadata.description:
        annotations[ANNOTATION_DESCRIPTION] = chart.metadata.description
    manifest = chart_manifest(config, layer, annotations)
    blobs = {config.descriptor.digest: config.data, layer.descriptor.digest: layer.data}
    return PromotionPlan(
        bundle,
        registry,
        prefix,
        chart_repository,
        tag,
        manifest,
        blobs,
        relocations,
        sorted(set(changed)),
        False,
        how=how,
    )


def _paths(doc: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, value in doc.items():
        path = f"{prefix}{key}"
        out += _paths(value, f"{path}.") if isinstance(value, dict) else [path]
    return out


def _cannot_relocate(problems: list[str]) -> str:
    more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" if problems[1:] else ""
    return (
        f"cannot relocate {len(problems)} image place(s) of the chart: {problems[0]}{more}; "
        "promote with --mirror-mode to leave the chart as it is"
    )


def _rewrite_value_paths(
    chart: Chart, bundle: VerifiedBundle, by_source: dict[str, Relocation]
) -> tuple[dict[str, bytes], dict[str, Any], list[str]]:
    """The rewrite of a lock packed without rendering: its value paths, in their recorded form."""
    from bundler.services.discover import coalesced_values

    values = dict(chart.values)
    effective = coalesced_values(chart)
    changed: list[str] = []
    for image in bundle.lock.images:
        for value_path in image.value_paths:
            current = get_path(effective, value_path.path)
            values = set_path(
                values, value_path.path, new_value(current, value_path, by_source[image.reference])
            )
            changed.append(value_path.path)
    return dict(chart.files), values, changed


def _prove(
    helm: Helm,
    archive: bytes,
    name: str,
    bundle: VerifiedBundle,
    relocations: list[Relocation],
    registry: str,
    prefix: str,
    deploy_values: dict[str, Any] | None,
) -> None:
    """Render the promoted chart as it will be deployed; every image must be internal."""
    rendering = bundle.lock.rendering
    settings = (
        dataclasses.replace(rendering, values={}) if rendering else RenderSettings({})
    )  # the values are in the promoted chart now
    extra = [deploy_values] if deploy_values else []
    text = helm.template(archive, f"promoted chart {name}", settings, extra)
    problems = prove(text, relocations, registry, prefix, bundle.lock.allowed_missing)
    if problems:
        more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" if problems[1:] else ""
        raise RelocationError(
            f"the promoted chart would run {len(problems)} image(s) from outside "
            f"{registry}/{prefix}: {problems[0]}{more}; promote with --mirror-mode, or give the "
            "values that relocate them"
        )


def promoted_versions(
    plan: PromotionPlan, transports: Transports, layout: Location | None
) -> dict[str, Digest | None]:
    """Tags already published for this chart, with what they point at where cheap to know.

    ``layout`` is the ``oci:`` layout (or memory store) promoted into; without one, the
    registry of the plan is asked.
    """
    if layout is not None:
        entries = transports.layout_entries(layout)
        prefix = f"{plan.registry}/{plan.chart_repository}:"
        return {
            name[len(prefix) :]: entry.digest
            for entry in entries
            if (name := entry.annotations.get(mt.ANNOTATION_REF_NAME, "")).startswith(prefix)
        }
    chart = Reference(plan.registry, plan.chart_repository, plan.chart_tag)
    try:
        tags = transports.list_tags(chart)
    except NotFoundError:
        return {}
    found: dict[str, Digest | None] = dict.fromkeys(tags)
    if plan.chart_tag in found:
        existing = transports.head(chart)
        found[plan.chart_tag] = existing.digest if existing else None
    return found


def check_rollback(
    plan: PromotionPlan, promoted: dict[str, Digest | None], allow_downgrade: bool
) -> None:
    """Refuse an older version than the newest promoted.

    The same version must be the same chart (then the promotion is idempotent).
    """
    version = parse_chart_version(plan.bundle.lock.chart.version)
    versions = []
    for tag in promoted:
        try:
            versions.append(parse_chart_version(tag.replace("_", "+")))
        except ValueError:
            continue  # signature and referrer tags live here too
    if plan.chart_tag in promoted:
        existing = promoted[plan.chart_tag]
        if existing == plan.chart.digest:
            plan.already_promoted = True
            return
        raise RollbackError(
            f"{plan.registry}/{plan.chart_repository}:{plan.chart_tag} is already promoted "
            f"with other content ({existing or 'unknown'}); a version is promoted once"
        )
    # Build metadata does not make another version: 1.0.0+b1 after 1.0.0+b2 (or after 1.0.0)
    # is the same version with other content, refused as a rollback is.
    same = [v for v in versions if v.compare(version) == 0]
    if same and not allow_downgrade:
        raise RollbackError(
            f"{plan.bundle.lock.chart.name} {version} differs from {same[0]}, already promoted "
            f"to {plan.registry}/{plan.chart_repository}, only in build metadata: that is the "
            "same version with other content; pass --allow-downgrade to replace it on purpose"
        )
    newer = [v for v in versions if v.compare(version) > 0]
    if newer and not allow_downgrade:
        raise RollbackError(
            f"{plan.bundle.lock.chart.name} {version} is older than {max(newer)}, already "
            f"promoted to {plan.registry}/{plan.chart_repository}; pass --allow-downgrade to "
            "roll back on purpose"
        )


def _image_tags(
    plan: PromotionPlan, transports: Transports, layout: Location | None
) -> list[tuple[Relocation, Digest | None]]:
    """Each image's target name with the digest it points at now (None where it is not there)."""
    entries: dict[str, Digest] = {}
    if layout is not None:
        entries = {
            e.annotations.get(mt.ANNOTATION_REF_NAME, ""): e.digest
            for e in transports.layout_entries(layout)
        }
    found: list[tuple[Relocation, Digest | None]] = []
    for relocation in plan.relocations:
        tagged = relocation.tagged
        if layout is not None:
            found.append((relocation, entries.get(str(tagged))))
            continue
        pinned = None if tagged.tag else relocation.digest  # untagged: look it up by digest
        head = transports.head(Reference(plan.registry, tagged.repository, tagged.tag, pinned))
        found.append((relocation, head.digest if head else None))
    return found


def check_mirror_tags(plan: PromotionPlan, transports: Transports, layout: Location | None) -> None:
    """In mirror mode, refuse to move an image tag that already names other content.

    A mirrored chart runs its images by tag, so re-pointing ``web:1.0.0`` under a later bundle
    would change what an already promoted release runs. RollbackError before anything moves.
    """
    if not plan.mirror:
        return
    for relocation, found in _image_tags(plan, transports, layout):
        if relocation.tag is not None and found is not None and found != relocation.digest:
            raise RollbackError(
                f"{relocation.tagged} is already promoted as {found}; this bundle pins "
                f"{relocation.digest} under the same tag, and a mirror tag is never moved "
                "(releases promoted before run it by tag): give the image a new tag"
            )


def _check_images_match(
    plan: PromotionPlan, transports: Transports, layout: Location | None
) -> None:
    """The same chart is promoted already; its images must be the ones this bundle pins.

    In mirror mode the chart names no digest, so a changed image would otherwise go unnoticed.
    """
    for relocation, found in _image_tags(plan, transports, layout):
        tagged = relocation.tagged
        if found is None:
            plan.already_promoted = False  # half there: promote again, blobs present are skipped
            return
        if found != relocation.digest:
            raise RollbackError(
                f"{plan.registry}/{plan.chart_repository}:{plan.chart_tag} is already promoted "
                f"with other images: {tagged} is {found}, this bundle pins {relocation.digest}"
            )


def sign_record(plan: PromotionPlan, key: SigningKey) -> tuple[Manifest, dict[Digest, bytes]]:
    """The promotion record as an OCI artifact referring to the chart, signed with ``key``.

    Returns the manifest and its blobs (the record layer and the empty config).
    """
    record = canonical_json(plan.record())
    signature = base64.b64encode(key.sign(record)).decode()
    layer = Blob.of(
        PROMOTION_MEDIA_TYPE,
        record,
        {PROMOTION_SIGNATURE: signature, PROMOTION_KEY_ID: key.public.key_id},
    )
    empty = EMPTY_DESCRIPTOR.to_json()
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": PROMOTION_MEDIA_TYPE,
        "config": empty,
        "layers": [layer.descriptor.to_json()],
        "subject": plan.chart.descriptor().to_json(),
    }
    manifest = parse_manifest(canonical_json(doc), media_type=mt.OCI_MANIFEST)
    return manifest, {layer.descriptor.digest: record, EMPTY_DESCRIPTOR.digest: EMPTY_JSON}


# Complexity kept: the numbered steps of promotion in order; each step is already a function.
def promote(  # noqa: C901
    source_location: Location,
    target: Location,
    transports: Transports,
    policy: TrustPolicy,
    key: SigningKey | None,
    *,
    style: str = "nested",
    mirror: bool = False,
    allow_downgrade: bool = False,
    dry_run: bool = False,
    parallel: int = 4,
    serve_as: Reference | None = None,
    helm: str | None = None,
    deploy_values: dict[str, Any] | None = None,
    progress: copy_service.Progress | None = None,
) -> PromotionResult:
    """Promote into a registry (``REGISTRY/PREFIX``), or into an OCI layout served as ``serve_as``.

    For a layout, the references the chart must name are those of the serving registry. The
    promoted chart is rendered (``helm``: a binary, else ``$BUNDLER_HELM`` or ``helm`` on PATH)
    with ``deploy_values`` to prove it runs only what the promotion puts there. ``progress``
    is told of the bytes verification checks and the copies move.
    """
    if target.kind in ("oci", "memory"):
        if serve_as is None:
            raise UsageError(
                "promoting into oci:DIR needs --serve-as REGISTRY/PREFIX, the name "
                "the layout will be served under"
            )
        name = serve_as
    elif target.kind == "registry" and target.reference is not None:
        name = target.reference
    else:
        raise UsageError("promote writes to a registry (--to REGISTRY/PREFIX) or oci:DIR")
    if name.tag or name.digest:
        raise UsageError(f"{name}: name a registry and a path prefix, without tag or digest")
    if key is None and not dry_run:
        raise UsageError("a promotion is signed: give --key PROMOTION.key (or --dry-run)")
    registry, prefix = name.registry, name.repository
    layout = target if target.kind in ("oci", "memory") else None
    helm_binary = None if mirror else find_helm(helm)
    if not mirror and helm_binary is None:
        raise UsageError(
            "promote proves the promoted chart by rendering it: install Helm or pass --helm "
            "PATH (--mirror-mode leaves the chart as it is and needs no rendering)"
        )

    def location_of(ref: Reference) -> Location:
        if layout is not None and layout.store is not None:
            return memory_location(layout.store, str(ref))
        if layout is not None:
            return Location("oci", f"oci:{layout.path}:{ref}", path=layout.path, ref=str(ref))
        return registry_location(ref)

    with open_for_verification(transports, source_location) as source:
        # Step 1: verify now, with every step; nothing else is promoted.
        report = verify(source, policy, parallel=parallel, bundles_only=True, progress=progress)
        if report.error is not None:
            raise report.error
        assert report.bundle is not None
        bundle = report.bundle
        # Step 2: plan, and refuse rollbacks before anything is written. Into a layout, the
        # whole promotion holds the layout's write lock: two promotions into one prefix go one
        # after the other, so the rollback check always sees what the other wrote.
        plan = plan_promotion(
            source,
            bundle,
            registry,
            prefix,
            style=style,
            mirror=mirror,
            helm=Helm(helm_binary) if helm_binary else None,
            deploy_values=deploy_values,
        )
        with _promotion_lock(layout, transports, dry_run) as lock:
            check_rollback(plan, promoted_versions(plan, transports, layout), allow_downgrade)
            if plan.already_promoted:
                _check_images_match(plan, transports, layout)
            else:
                check_mirror_tags(plan, transports, layout)
            if dry_run or plan.already_promoted:
                return PromotionResult(plan, dry_run)  # idempotent: nothing new to write
            assert key is not None
            writer = _Writer(transports, layout, lock, parallel, location_of, progress)
            writer.images(source, bundle, plan)
            record = writer.chart(source, plan, key, allow_downgrade)
            return PromotionResult(plan, False, record.digest)


@contextlib.contextmanager
def _promotion_lock(
    layout: Location | None, transports: Transports, dry_run: bool
) -> Iterator[DestinationLock | None]:
    """The ``oci:`` layout's write lock, held for a whole promotion into it (None elsewhere)."""
    if layout is None or layout.kind != "oci" or dry_run:
        yield None
        return
    lock = transports.open_target(layout).write_lock
    if lock is None:
        yield None
        return
    with lock:
        yield lock


@dataclass
class _Writer:
    """Steps 3 to 5: images, the chart with its record, the chart's version tag last."""

    transports: Transports
    layout: Location | None
    lock: DestinationLock | None
    parallel: int
    location_of: Callable[[Reference], Location]
    progress: copy_service.Progress | None = None

    def _target(self, ref: Reference) -> Target:
        # The lock this promotion holds already: the targets' own holds only count on it.
        return self.transports.open_target(self.location_of(ref), write_lock=self.lock)

    def images(self, source: Source, bundle: VerifiedBundle, plan: PromotionPlan) -> None:
        """Step 3: images, by digest, each tagged once its content is in place."""
        index = _verified_index(source, bundle)
        pinned = {d.annotations.get("dev.bundler.image.ref"): d for d in index.manifests}
        for relocation in plan.relocations:
            descriptor = pinned[relocation.source]
            rooted = OverlaySource(
                source, root=descriptor, ref_name=relocation.tag, inherit_names=False
            )
            copy_service.copy(
                rooted,
                self._target(relocation.tagged),
                parallel=self.parallel,
                with_referrers=False,
                progress=self.progress,
            )

    def chart(
        self, source: Source, plan: PromotionPlan, key: SigningKey, allow_downgrade: bool
    ) -> Manifest:
        """Steps 4 and 5: the chart and its signed record (once), then the version tag.

        A re-run after a kill finds the record it attached already and attaches no second one.
        """
        record = existing_record(plan, key, self.transports, self.layout)
        chart_ref = Reference(plan.registry, plan.chart_repository, plan.chart_tag, None)
        # The chart carries its promotion record, not the vendor's signatures or tags.
        on_registry = self.layout is None
        chart_source = OverlaySource(
            source,
            root=plan.chart.descriptor(),
            ref_name=None if on_registry else plan.chart_tag,
            inherit_names=False,
        )
        chart_source.add(plan.chart, plan.chart_blobs, None)
        if record is None:
            record, record_blobs = sign_record(plan, key)
            chart_source.add_referrer(plan.chart.digest, record, record_blobs)
        if not on_registry:
            copy_service.copy(chart_source, self._target(chart_ref), parallel=self.parallel)
            return record
        # A registry has no lock: the chart goes in by digest, the versions are read again
        # right before its version tag is written and once more after (compare-and-set).
        untagged = Reference(plan.registry, plan.chart_repository, None, None)
        copy_service.copy(chart_source, self._target(untagged), parallel=self.parallel)
        check_rollback(plan, promoted_versions(plan, self.transports, None), allow_downgrade)
        tagger = self._target(chart_ref)
        tagger.tag(plan.chart_tag, plan.chart)
        tagger.commit()
        newer = newer_promoted(plan, promoted_versions(plan, self.transports, None))
        if newer and not allow_downgrade:
            raise RollbackError(
                f"{plan.registry}/{plan.chart_repository}: {newer[0]} was promoted at the same "
                f"moment as {plan.bundle.lock.chart.version}, whose tag {plan.chart_tag} is now "
                "there too and older; remove that tag, or promote again with --allow-downgrade "
                "to keep it on purpose"
            )
        return record


def newer_promoted(plan: PromotionPlan, promoted: dict[str, Digest | None]) -> list[str]:
    """The promoted versions newer than the plan's, newest first."""
    version = parse_chart_version(plan.bundle.lock.chart.version)
    newer: list[tuple[semver.Version, str]] = []
    for tag in promoted:
        try:
            other = parse_chart_version(tag.replace("_", "+"))
        except ValueError:
            continue  # signature and referrer tags live here too
        if other.compare(version) > 0:
            newer.append((other, tag.replace("_", "+")))
    return [text for _, text in sorted(newer, reverse=True)]


def existing_record(
    plan: PromotionPlan, key: SigningKey, transports: Transports, layout: Location | None
) -> Manifest | None:
    """A record of exactly this promotion by ``key`` already attached to the chart, if any."""
    if layout is not None and layout.store is not None:
        where = memory_location(layout.store)
    elif layout is not None:
        where = Location("oci", f"oci:{layout.path}", path=layout.path)
    else:
        ref = Reference(plan.registry, plan.chart_repository, None, plan.chart.digest)
        where = registry_location(ref)
    wanted = canonical_json(plan.record())
    try:
        found = transports.open_source(where)
    except NotFoundError:
        return None  # nothing promoted there yet
    try:
        for descriptor in found.referrers(plan.chart.digest):
            if descriptor.artifact_type not in (PROMOTION_MEDIA_TYPE, None):
                continue
            manifest = found.fetch_manifest(descriptor)
            attached = manifest.subject is not None and manifest.subject.digest == plan.chart.digest
            if attached and _records_this(found, manifest, wanted, key):
                return manifest
    except NotFoundError:
        return None
    finally:
        found.close()
    return None


def _records_this(source: Source, manifest: Manifest, wanted: bytes, key: SigningKey) -> bool:
    for layer in manifest.layers:
        if layer.media_type != PROMOTION_MEDIA_TYPE or layer.size != len(wanted):
            continue
        record = read_exact(VerifiedStream(source.open_blob(layer), layer, source.name), layer.size)
        try:
            signature = base64.b64decode(
                layer.annotations.get(PROMOTION_SIGNATURE, ""), validate=True
            )
        except ValueError:
            continue
        if record == wanted and key.public.verify(record, signature):
            return True
    return False


MAX_RECORD_BYTES = 1024 * 1024


def verify_promotion(source: Source, key: Verifier) -> dict[str, Any]:
    """Check a promoted chart's record and return it.

    The record must be attached to this chart, signed by ``key`` (a public key), and name this
    chart's digest; the kernel judges the records found (``trust.check_promotion``).
    """
    chart = source.fetch_manifest(source.resolve())
    records: list[RecordFact] = []
    referrers = source.referrers(chart.digest) if not chart.is_index else []
    for descriptor in referrers:
        if descriptor.artifact_type not in (PROMOTION_MEDIA_TYPE, None):
            continue
        manifest = source.fetch_manifest(descriptor)
        if manifest.subject is None or manifest.subject.digest != chart.digest:
            continue
        for layer in manifest.layers:
            if layer.media_type != PROMOTION_MEDIA_TYPE or layer.size > MAX_RECORD_BYTES:
                continue
            record = read_exact(
                VerifiedStream(source.open_blob(layer), layer, source.name), layer.size
            )
            records.append(RecordFact(record, layer.annotations.get(PROMOTION_SIGNATURE, "")))
    return check_promotion(source.name, chart, records, key)
