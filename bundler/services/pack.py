"""``bundler pack``: a chart and every image it runs become one OCI bundle.

1. Chart: load it (directory, .tgz, or a Helm OCI reference) and make its Helm OCI manifest.
   A directory is packaged reproducibly; an archive or an OCI chart keeps its bytes.
2. Discover: the chart rendered by Helm with the user's values says which images it *runs*,
   and differential rendering which values compose each one (``services/discover.py``); the
   bundle config and the chart's annotations add images; image-shaped values add only images
   of components that are off, when asked (``include_disabled``).
3. Select: every rendered image is bundled, so the bundle is complete by construction, unless
   the user allows an image to be missing by name. Images no source has are reported together.
4. Resolve: each declared image is looked up in the configured sources, then its own registry;
   tags are resolved to digests once; multi-arch indexes stay whole unless platforms are given.
5. Lock and index: the lock document and the bundle index are built from the above alone, so
   the same inputs give the same bundle digest.
6. Write: the ordinary copy moves it to the target, verified, names last.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import semver

from bundler.adapters.base import Source
from bundler.adapters.chart import Chart, load_chart, load_chart_archive
from bundler.adapters.helm import Helm, find_helm
from bundler.adapters.stream import VerifiedStream, read_exact
from bundler.errors import (
    ChartError,
    ConfigError,
    DigestMismatchError,
    IncompleteError,
    NotFoundError,
    UsageError,
)
from bundler.model import mediatypes as mt
from bundler.model.bundle import (
    ANNOTATION_CREATED,
    ANNOTATION_DESCRIPTION,
    ANNOTATION_TITLE,
    ANNOTATION_VERSION,
    EMPTY_DESCRIPTOR,
    EMPTY_JSON,
    LOCK_MEDIA_TYPE,
    ROLE_CHART,
    ROLE_IMAGE,
    ROLE_LOCK,
    Blob,
    BundleEntry,
    BundleLock,
    LockedChart,
    LockedImage,
    LockedUse,
    ValuePath,
    bundle_index,
    canonical_json,
    chart_manifest,
    helm_tag,
    lock_manifest,
)
from bundler.model.chartversion import parse_chart_version
from bundler.model.descriptor import Descriptor, Platform
from bundler.model.digest import Digest
from bundler.model.manifest import Manifest, load_json_strict, parse_manifest
from bundler.model.reference import Reference
from bundler.model.rendering import RenderSettings
from bundler.model.spec import BundleSpec, ImageSourceSpec
from bundler.services import copy as copy_service
from bundler.services.bundle_source import BundleSource
from bundler.services.discover import DiscoveredImage, Discovery, discover
from bundler.services.graph import platforms, walk
from bundler.services.transports import Kind, Location, Transports, registry_location

MAX_CHART_BYTES = 20 * 1024 * 1024
ANNOTATION_CHART = "dev.bundler.chart"


@dataclass
class PackedImage:
    """One image as packing found it: digest, platforms, total size, where it was pulled from."""

    reference: str
    digest: Digest
    media_type: str
    platforms: tuple[str, ...]
    size: int
    pulled_from: str
    value_paths: tuple[ValuePath, ...]
    found_by: tuple[str, ...]
    uses: tuple[LockedUse, ...] = ()


@dataclass
class PackResult:
    """What ``pack`` made: the bundle's name, version and digest, chart, images, and the copy."""

    name: str
    version: str
    digest: Digest
    target: str
    tag: str | None
    chart: LockedChart
    images: list[PackedImage] = field(default_factory=list)
    rendered: bool = False
    copy: copy_service.CopyResult | None = None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The ``pack --output json`` document; ``copy`` is None when nothing was written."""
        return {
            "name": self.name,
            "version": self.version,
            "digest": str(self.digest),
            "target": self.target,
            "tag": self.tag,
            "chart": self.chart.to_json(),
            "images": [
                {
                    "reference": i.reference,
                    "digest": str(i.digest),
                    "mediaType": i.media_type,
                    "platforms": list(i.platforms),
                    "size": i.size,
                    "pulledFrom": i.pulled_from,
                    "valuePaths": [v.to_json() for v in i.value_paths],
                    "foundBy": list(i.found_by),
                    "uses": [u.to_json() for u in i.uses],
                }
                for i in self.images
            ],
            "completeness": {"rendered": self.rendered},
            "warnings": self.warnings,
            "copy": self.copy.to_json() if self.copy else None,
        }


# -- step 1: the chart -----------------------------------------------------------------------


@dataclass
class LoadedChart:
    """Step 1's result: the chart, its Helm OCI manifest, and where the manifest's blobs come from.

    ``blobs`` holds the config and archive made in memory; an OCI chart has ``source`` instead.
    """

    chart: Chart
    manifest: Manifest
    source_kind: str
    blobs: dict[Digest, bytes] = field(default_factory=dict)
    source: Source | None = None  # for OCI charts: where the manifest's blobs come from


def load_chart_for_bundle(spec: BundleSpec, transports: Transports) -> LoadedChart:
    """Step 1: the chart from a path (directory or ``.tgz``) or an OCI reference, as a manifest.

    UsageError unless exactly one is named; ChartError for an OCI artifact that is not a chart.
    """
    if (spec.chart_path is None) == (spec.chart_ref is None):
        raise UsageError("name exactly one chart: a path (directory or .tgz) or an OCI reference")
    if spec.chart_path is not None:
        path = spec.chart_path
        if not path.exists():
            raise NotFoundError(f"chart {path} does not exist")
        chart = load_chart(path)
        metadata = chart.metadata
        config = Blob.of(mt.HELM_CONFIG, metadata.config_json())
        archive = Blob.of(mt.HELM_CHART, chart.archive)
        annotations = {ANNOTATION_TITLE: metadata.name, ANNOTATION_VERSION: metadata.version}
        if metadata.description:
            annotations[ANNOTATION_DESCRIPTION] = metadata.description
        manifest = chart_manifest(config, archive, annotations)
        kind = "directory" if path.is_dir() else "archive"
        return LoadedChart(
            chart,
            manifest,
            kind,
            {config.descriptor.digest: config.data, archive.descriptor.digest: archive.data},
        )
    assert spec.chart_ref is not None
    reference = Reference.parse(spec.chart_ref.removeprefix("oci://"), default_tag=False)
    if reference.tag is None and reference.digest is None:
        reference = reference.with_tag(newest_chart_tag(transports, reference))
    source = transports.open_source(registry_location(reference))
    manifest = source.fetch_manifest(source.resolve())
    if manifest.is_index or manifest.config is None or manifest.config.media_type != mt.HELM_CONFIG:
        raise ChartError(f"{reference} is not a Helm chart (config {manifest.config})")
    layers = [layer for layer in manifest.layers if layer.media_type == mt.HELM_CHART]
    if len(layers) != 1:
        raise ChartError(f"{reference} has {len(layers)} chart content layers, expected 1")
    layer = layers[0]
    if layer.size > MAX_CHART_BYTES:
        raise ChartError(f"chart {reference} is {layer.size} bytes, more than {MAX_CHART_BYTES}")
    data = read_exact(VerifiedStream(source.open_blob(layer), layer, str(reference)), layer.size)
    chart = load_chart_archive(data, f"chart {reference}")
    return LoadedChart(chart, manifest, "oci", source=source)


def newest_chart_tag(transports: Transports, reference: Reference) -> str:
    """The tag of the highest released chart version in a repository, as Helm picks one.

    Prereleases and tags that are not versions (signatures, ``latest``) do not count; ``+`` is
    written ``_`` in OCI tags. NotFoundError when the repository holds no version.
    """
    best: tuple[semver.Version, str] | None = None
    for tag in transports.list_tags(reference):
        try:
            version = parse_chart_version(tag.replace("_", "+"))
        except ValueError:
            continue
        if version.prerelease is None and (best is None or version.compare(best[0]) > 0):
            best = (version, tag)
    if best is None:
        raise NotFoundError(
            f"chart {reference}: no released version among its tags; name one with :VERSION"
        )
    return best[1]


# -- steps 2 and 3: discovery and completeness ------------------------------------------------


def render_settings(spec: BundleSpec, helm: Helm | None) -> RenderSettings:
    """The values (files and ``--set*`` merged by Helm), kube and API versions to render with.

    UsageError for a ``--kube-version`` that is not a version (before Helm is asked).
    """
    if spec.kube_version is not None and not re.fullmatch(r"v?\d+\.\d+(\.\d+)?", spec.kube_version):
        raise UsageError(
            f"--kube-version {spec.kube_version!r} is not a Kubernetes version (e.g. 1.29.3)"
        )
    values: dict[str, Any] = {}
    if spec.values_files or spec.set_values or spec.set_strings or spec.set_files:
        if helm is None:
            raise UsageError(
                "values files and --set need helm to be read as Helm reads them: install Helm "
                "or pass --helm PATH"
            )
        values = helm.user_values(
            spec.values_files, spec.set_values, spec.set_strings, spec.set_files
        )
    return RenderSettings(
        values, spec.kube_version, tuple(spec.api_versions), skip_tests=spec.skip_tests
    )


def select_images(spec: BundleSpec, discovery: Discovery) -> dict[str, DiscoveredImage]:
    """Step 3: what the bundle holds, complete by construction.

    Every rendered image, annotation and config images, and values images of components that are
    off only with ``include_disabled``; minus the images allowed missing by name.
    """
    allowed = {str(Reference.parse(r)) for r in spec.allow_missing}
    selected = discovery.selected(spec.include_disabled)
    return {key: image for key, image in selected.items() if key not in allowed}


# -- step 4: resolving images ----------------------------------------------------------------


class ImageResolver:
    """Finds each image in the configured sources, then (if allowed) its own registry."""

    def __init__(
        self, sources: list[ImageSourceSpec], upstream: bool, transports: Transports
    ) -> None:
        self.sources = sources
        self.upstream = upstream
        self.transports = transports

    def _candidates(self, ref: Reference) -> list[tuple[str, Callable[[], Source]]]:
        out: list[tuple[str, Callable[[], Source]]] = []
        names = [str(ref)]
        if ref.digest is not None and ref.tag is not None:
            names.append(str(ref.with_digest(None)))
        for spec in self.sources:
            if spec.kind in ("oci", "docker-archive"):
                assert spec.path is not None
                kind: Kind = "oci" if spec.kind == "oci" else "docker-archive"
                for name in names:
                    where = Location(kind, f"{kind}:{spec.path}:{name}", spec.path, name)
                    out.append((where.text, self._path_opener(where)))
            elif spec.kind == "mirror" and spec.mirror_from == ref.registry:
                assert spec.mirror_to is not None
                host, _, prefix = spec.mirror_to.partition("/")
                repo = f"{prefix.strip('/')}/{ref.repository}" if prefix else ref.repository
                mirrored = Reference(host, repo, ref.tag, ref.digest)
                out.append((str(mirrored), self._registry_opener(mirrored)))
        if self.upstream:
            out.append((str(ref), self._registry_opener(ref)))
        return out

    def _path_opener(self, where: Location) -> Callable[[], Source]:
        def open_() -> Source:
            assert where.path is not None
            if not where.path.exists():
                raise NotFoundError(f"image source {where.path} does not exist")
            return self.transports.open_source(where)

        return open_

    def _registry_opener(self, ref: Reference) -> Callable[[], Source]:
        def open_() -> Source:
            return self.transports.open_source(registry_location(ref))

        return open_

    def resolve(self, ref: Reference) -> tuple[Source, Descriptor, str]:
        """Step 4: the first source holding ``ref``, its descriptor, and where it was found.

        DigestMismatchError if ``ref`` is pinned and the source holds another digest; NotFoundError
        naming every place looked in.
        """
        tried: list[str] = []
        for where, opener in self._candidates(ref):
            try:
                source = opener()
                descriptor = source.resolve()
            except NotFoundError:
                tried.append(where)
                continue
            if ref.digest is not None and descriptor.digest != ref.digest:
                raise DigestMismatchError(
                    f"{ref} is pinned to {ref.digest} but {where} holds {descriptor.digest}"
                )
            return source, descriptor, where
        if not tried:
            raise NotFoundError(
                f"image {ref}: nowhere to look for it (--no-upstream and no --source or --mirror "
                f"for {ref.registry})"
            )
        raise NotFoundError(f"image {ref} not found (looked in: {', '.join(tried)})")


def check_sources(spec: BundleSpec) -> None:
    """Every ``--source`` named must exist: one that does not is never silently skipped.

    (Skipping it would fetch the images from their registries instead, behind the packer's back.)
    """
    for source in spec.sources:
        if source.path is not None and not source.path.exists():
            raise NotFoundError(
                f"image source {source.kind}:{source.path} does not exist (pack would otherwise "
                "fetch its images from somewhere else)"
            )


def _lacking_platforms(key: str, found: tuple[str, ...], wanted: list[Platform]) -> list[str]:
    """``KEY lacks os/arch (has ...)`` when the image has not every platform asked for."""
    have = [Platform.parse(p) for p in found if p.count("/") in (1, 2)]
    missing = [str(w) for w in wanted if not any(_matches(h, [w]) for h in have)]
    if not missing:
        return []
    return [f"{key} lacks {', '.join(missing)} (has {', '.join(found) or 'none'})"]


def _matches(platform: Platform, wanted: list[Platform]) -> bool:
    return any(
        platform.os == w.os
        and platform.architecture == w.architecture
        and (w.variant is None or w.variant == platform.variant)
        for w in wanted
    )


def filter_platforms(index: Manifest, wanted: list[Platform], ref: str) -> Manifest:
    """A new index holding only the children of the wanted platforms (their bytes untouched)."""
    doc = load_json_strict(index.raw, f"index of {ref}")
    kept = [
        child
        for child, d in zip(doc["manifests"], index.manifests, strict=True)
        if d.platform is not None and _matches(d.platform, wanted)
    ]
    if not kept:
        have = ", ".join(str(d.platform) for d in index.manifests if d.platform) or "none"
        raise UsageError(f"{ref} has none of the platforms asked for (it has: {have})")
    if len(kept) == len(doc["manifests"]):
        return index
    doc["manifests"] = kept
    return parse_manifest(canonical_json(doc), media_type=index.media_type)


# -- the whole job ---------------------------------------------------------------------------


@dataclass
class PackOptions:
    """How to pack: helm binary, whether to render templates, ``created`` stamp, parallelism."""

    helm: str | None = None
    render: bool = True
    created: str | None = None
    parallel: int = 4


def pack(  # noqa: C901 - the numbered steps of packing in order; each step is already a function
    spec: BundleSpec,
    target_location: str,
    transports: Transports,
    options: PackOptions | None = None,
    progress: copy_service.Progress | None = None,
    warn: Callable[[str], None] | None = None,
) -> PackResult:
    """Pack the chart and every image it runs into one bundle at ``target_location``.

    Chart, discovery, completeness, image resolution, lock and index, then an ordinary copy to the
    target. Nothing is named in the target before all content is there.
    """
    from bundler.services.transports import parse_location

    options = options or PackOptions()
    wanted = [Platform.parse(p) for p in spec.platforms]  # a typo fails before any work
    check_sources(spec)
    target = transports.open_target(parse_location(target_location, for_target=True))
    # Step 1: the chart.
    loaded = load_chart_for_bundle(spec, transports)
    chart = loaded.chart
    name = spec.name or chart.metadata.name
    version = spec.version or chart.metadata.version
    try:
        parse_chart_version(version)
    except ValueError:
        raise ConfigError(f"bundle version {version!r} is not semantic versioning") from None
    # Steps 2 and 3: what the chart runs (rendered), and what else it names.
    helm = find_helm(options.helm) if options.render else None
    if options.render and helm is None:
        raise UsageError(
            "no helm binary to render the chart for the completeness check: install Helm, "
            "pass --helm PATH, or pack without the check using --no-render"
        )
    settings = render_settings(spec, Helm(helm) if helm else None)
    discovery = discover(
        chart,
        helm=helm,
        value_paths=spec.value_paths,
        settings=settings,
        extra_images=[(i.ref, i.value_paths) for i in spec.images],
    )
    for warning in discovery.warnings:
        if warn is not None:
            warn(warning)
    declared = select_images(spec, discovery)
    if not declared:
        raise IncompleteError(f"chart {chart.metadata.name} declares no images to bundle")
    # Step 4: resolve and pin every image.
    bundle = BundleSource(f"bundle {name}:{version}", f"{name}:{helm_tag(version)}")
    resolver = ImageResolver(spec.sources, spec.upstream, transports)
    entries: list[BundleEntry] = [BundleEntry(ROLE_CHART, loaded.manifest)]
    bundle.add_manifest(loaded.manifest)
    for digest, data in loaded.blobs.items():
        bundle.add_blob(digest, data)
    if loaded.source is not None:
        for blob in loaded.manifest.blobs():
            bundle.route(blob.digest, loaded.source)
    images: list[PackedImage] = []
    lacking: list[str] = []
    found: dict[str, tuple[Source, Descriptor, str]] = {}
    missing: list[str] = []
    for key in sorted(declared):
        try:
            found[key] = resolver.resolve(Reference.parse(declared[key].reference))
        except NotFoundError as exc:
            uses = sorted({u.where for u in declared[key].uses})
            where = f" (run by {', '.join(uses)})" if uses else ""
            missing.append(f"{exc}{where}".replace(f"image {key}", f"{key}", 1))
    if missing:
        more = f"; and {len(missing) - 1} more: {'; '.join(missing[1:])}" if missing[1:] else ""
        raise NotFoundError(
            f"{len(missing)} image(s) the bundle needs cannot be found: {missing[0]}{more}; "
            "give a --source or --mirror that has them, or leave one out with --allow-missing REF"
        )
    for key in sorted(declared):
        item = declared[key]
        source, descriptor, where = found[key]
        bundle.route(descriptor.digest, source)
        manifest = bundle.fetch_manifest(descriptor)
        if wanted and manifest.is_index:
            filtered = filter_platforms(manifest, wanted, key)
            if filtered is not manifest:
                bundle.add_manifest(filtered)
                for child in filtered.manifests:
                    bundle.route(child.digest, source)
                manifest = filtered
        under = walk(bundle, manifest.descriptor())
        size, found_platforms = under.size, platforms(bundle, manifest)
        lacking += _lacking_platforms(key, found_platforms, wanted)
        entries.append(BundleEntry(ROLE_IMAGE, manifest, image_ref=key))
        images.append(
            PackedImage(
                reference=key,
                digest=manifest.digest,
                media_type=manifest.media_type,
                platforms=found_platforms,
                size=size,
                pulled_from=where,
                value_paths=tuple(ValuePath(p, f) for p, f in sorted(item.value_paths.items())),
                found_by=tuple(sorted(item.found_by)),
                uses=tuple(
                    LockedUse(u.place, u.where, u.written, u.composition) for u in item.uses
                ),
            )
        )
    if lacking and not spec.allow_missing_platforms:
        more = f"; {'; '.join(lacking[1:])}" if lacking[1:] else ""
        raise NotFoundError(
            f"{len(lacking)} image(s) lack a platform asked for: {lacking[0]}{more}; pack them "
            "anyway with --allow-missing-platforms"
        )
    # Step 5: the lock and the index.
    locked_chart = LockedChart(
        name=chart.metadata.name,
        version=chart.metadata.version,
        app_version=chart.metadata.app_version,
        manifest=loaded.manifest.digest,
        archive=loaded.manifest.layers[0].digest if loaded.manifest.layers else Digest.of(b""),
        source=loaded.source_kind,
    )
    lock = BundleLock(
        name=name,
        version=version,
        chart=locked_chart,
        rendered=options.render,
        created=options.created,
        allowed_missing=tuple(spec.allow_missing),
        images=tuple(
            LockedImage(
                i.reference,
                i.digest,
                i.media_type,
                i.size,
                i.platforms,
                i.value_paths,
                i.found_by,
                i.uses,
            )
            for i in images
        ),
        rendering=discovery.settings,
    )
    lock_blob = Blob.of(LOCK_MEDIA_TYPE, lock.to_bytes(), {ANNOTATION_TITLE: "bundle-lock.json"})
    lock_manifest_ = lock_manifest(lock_blob)
    bundle.add_blob(lock_blob.descriptor.digest, lock_blob.data)
    bundle.add_blob(EMPTY_DESCRIPTOR.digest, EMPTY_JSON)
    bundle.add_manifest(lock_manifest_)
    entries.append(BundleEntry(ROLE_LOCK, lock_manifest_))
    annotations = {
        ANNOTATION_TITLE: name,
        ANNOTATION_VERSION: version,
        ANNOTATION_CHART: f"{chart.metadata.name}:{chart.metadata.version}",
        **spec.annotations,
    }
    if options.created:
        annotations[ANNOTATION_CREATED] = options.created
    index = bundle_index(entries, annotations)
    bundle.set_root(index)
    # Step 6: write it.
    try:
        copied = copy_service.copy(
            bundle,
            target,
            parallel=options.parallel,
            progress=progress,
        )
    finally:
        bundle.close()
    return PackResult(
        name=name,
        version=version,
        digest=index.digest,
        target=target.name,
        tag=copied.tag,
        chart=locked_chart,
        images=images,
        rendered=options.render,
        copy=copied,
        warnings=discovery.warnings,
    )
