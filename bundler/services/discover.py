"""Which images does a chart run? Helm's render says; four other sources add and explain.

1. ``template``: every image the chart renders with the user's values (``services/rendered.py``),
   with the values that compose each one, found by differential rendering
   (``services/valuemap.py``). This is what runs, so this is what a bundle holds.
2. ``annotation``: the ``helm.sh/images`` / ``artifacthub.io/images`` Chart.yaml annotations
   (an entry's ``condition`` honoured).
3. ``config``: images and value paths the bundle config names explicitly.
4. ``values``: image-shaped values in values.yaml of the chart and its subcharts. Where the
   chart is rendered they never add an image by themselves: one the render does not run belongs
   to a component that is off (bundled only with ``--include-disabled``). Without rendering
   (``--no-render``) they are the best guess there is.

A malformed entry (a templated repository, an annotation that is not YAML, a reference that is not
valid) is a warning naming where it came from, never an abort.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bundler.adapters.chart import Chart, parse_yaml
from bundler.adapters.helm import Helm
from bundler.errors import ChartError, ConfigError, ReferenceFormatError
from bundler.model.reference import Reference
from bundler.model.relocation import coalesce_values
from bundler.model.rendering import RenderSettings
from bundler.services.rendered import Place, Scan, scan
from bundler.services.valuemap import Control, Part, compose, relocation_settings
from bundler.services.valuemap import controls as value_controls

Source = Literal["config", "annotation", "values", "template"]
ValueForm = Literal["string", "map"]

IMAGE_ANNOTATIONS = ("helm.sh/images", "artifacthub.io/images")
MAX_WALK_NODES = 1_000_000  # YAML aliases can make a small file a huge tree


@dataclass(frozen=True)
class ImageFinding:
    """One image reference found in a chart: where (``source``, value path) and in which form."""

    reference: str  # normalised: docker.io/library/nginx:1.25
    written: str  # as the chart writes it
    source: Source
    value_path: str | None  # into the top chart's values; None for annotations and templates
    value_form: ValueForm | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        """The ``images --output json`` object of a finding (camelCase keys)."""
        return {
            "reference": self.reference,
            "written": self.written,
            "source": self.source,
            "valuePath": self.value_path,
            "valueForm": self.value_form,
            "detail": self.detail,
        }


# ---------------------------------------------------------------------------- value paths

_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _split_path(path: str) -> list[str | int]:
    """``a.b[0].c`` or ``a.b.0.c`` -> ``["a", "b", 0, "c"]``."""
    parts: list[str | int] = []
    pos = 0
    while pos < len(path):
        if path[pos] == "." and parts:
            pos += 1
        match = _SEGMENT.match(path, pos)
        if match is None:
            raise ConfigError(f"value path {path!r} is malformed")
        key, index = match.groups()
        parts.append(int(index) if index is not None else key)
        pos = match.end()
    if not parts:
        raise ConfigError("value path is empty")
    return parts


def _join_path(prefix: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else key


def resolve_value(values: dict[str, Any], path: str) -> Any:
    """The value at a dotted path (list items as ``[n]`` or ``.n``); ``ConfigError`` if absent."""
    node: Any = values
    for part in _split_path(path):
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, int) and str(part) in node:
            node = node[str(part)]
        elif isinstance(node, list) and isinstance(part, str) and part.isdigit():
            if int(part) >= len(node):
                raise ConfigError(f"value path {path!r} does not exist in the chart's values")
            node = node[int(part)]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            raise ConfigError(f"value path {path!r} does not exist in the chart's values")
    return node


# ---------------------------------------------------------------------------- image shapes


def _parse(text: str) -> Reference:
    return Reference.parse(text)


def _looks_like_image_string(text: str) -> bool:
    return ":" in text.rpartition("/")[2] or "@" in text or "/" in text


@dataclass(frozen=True)
class _Shaped:
    reference: str
    written: str
    form: ValueForm


def _image_from_map(
    key: object, node: dict[str, Any], app_version: str | None, where: str
) -> _Shaped | None:
    """An image map, or ``None`` if ``node`` is not one.

    Shapes: ``{registry?, repository, tag?, digest?}`` (Bitnami), ``{name, tag}`` under an
    image-like key, and a map holding an ``image`` string beside a ``tag``. An empty tag means
    the chart's appVersion (the common ``.Values.image.tag | default .Chart.AppVersion`` idiom);
    a digest wins over a tag.
    """
    image_key = _is_image_key(key)
    repository = node.get("repository")
    name_key = "repository"
    if isinstance(repository, str) and repository:
        if not (image_key or any(k in node for k in ("tag", "registry", "digest"))):
            return None
    elif image_key and isinstance(node.get("name"), str) and node["name"] and "tag" in node:
        repository, name_key = node["name"], "name"
    elif isinstance(node.get("image"), str) and node["image"] and "tag" in node:
        repository, name_key = node["image"], "image"
    else:
        return None
    registry, tag, digest = node.get("registry"), node.get("tag"), node.get("digest")
    for label, value in (("registry", registry), ("tag", tag), ("digest", digest)):
        if value is not None and not isinstance(value, str | int | float):
            raise ChartError(f"{where}: image {label} must be a string")
    name = f"{registry}/{repository}" if registry else str(repository)
    written = name + (f":{tag}" if tag not in (None, "") else "")
    tag_text = str(tag) if tag not in (None, "") else (app_version or "")
    if digest:
        text, written = f"{name}@{digest}", f"{written}@{digest}"
    elif tag_text:
        text = f"{name}:{tag_text}"
    else:
        text = name
    try:
        ref = _parse(text)
    except ReferenceFormatError as exc:
        raise ChartError(f"{where}: {name_key} map is not a valid image reference: {exc}") from None
    return _Shaped(str(ref), written, "map")


def _image_from_string(text: str) -> _Shaped | None:
    if not _looks_like_image_string(text):
        return None
    try:
        return _Shaped(str(_parse(text)), text, "string")
    except ReferenceFormatError:
        return None


def _is_image_key(key: object) -> bool:
    return isinstance(key, str) and (key == "image" or key.endswith(("Image", "image")))


def _shape(key: object, node: Any, app_version: str | None, where: str) -> _Shaped | None:
    if isinstance(node, dict):
        return _image_from_map(key, node, app_version, where)
    if isinstance(node, str) and _is_image_key(key):
        return _image_from_string(node)
    return None


# ---------------------------------------------------------------------------- values


def _walk(
    node: Any, path: str, key: object, budget: list[int]
) -> Iterator[tuple[str, object, Any]]:
    """Every (path, key, node) below ``node``, depth first, maps in file order."""
    budget[0] -= 1
    if budget[0] < 0:
        raise ChartError(f"values have more than {MAX_WALK_NODES} nodes (YAML alias bomb?)")
    yield path, key, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, _join_path(path, str(k)), k, budget)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, _join_path(path, i), i, budget)


def _has_path(values: dict[str, Any], path: str) -> bool:
    try:
        resolve_value(values, path)
    except ConfigError:
        return False
    return True


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith((prefix + ".", prefix + "["))


# Complexity kept: one walk of the values; each skip (globals, maps seen, subcharts) a branch.
def _values_findings(  # noqa: C901
    chart: Chart,
    prefix: str,
    label: str,
    overrides: dict[str, Any],
    depth: int,
    warnings: list[str],
) -> list[ImageFinding]:
    """Image-shaped values of ``chart``, reported at their path in the top chart's values.

    The chart's values.yaml is taken under ``overrides`` from the charts above it.
    """
    effective = coalesce_values(chart.values, overrides)
    findings: list[ImageFinding] = []
    budget = [MAX_WALK_NODES]
    skip: list[str] = []  # paths already reported as a map, so their keys are not walked again
    for path, key, node in _walk(effective, "", None, budget):
        if not path or (depth > 0 and _under(path, "global")):
            continue  # globals live at the top chart's `global`, reported there
        if any(_under(path, s) for s in skip):
            continue
        if any(_under(path, s.name) for s in chart.subcharts):
            continue  # reported by the subchart itself, with its own appVersion
        full = f"{prefix}{path}"
        try:
            shaped = _shape(key, node, chart.metadata.app_version, f"values.yaml value {full!r}")
        except ChartError as exc:
            warnings.append(f"{exc} (skipped)")
            skip.append(path)
            continue
        if shaped is None:
            continue
        if isinstance(node, dict):
            skip.append(path)
        overridden = depth > 0 and _has_path(overrides, path)
        detail = f"values.yaml of {label}"
        if overridden:
            detail += " (overridden by a parent chart)"
        findings.append(
            ImageFinding(shaped.reference, shaped.written, "values", full, shaped.form, detail)
        )
    for sub in chart.subcharts:
        sub_overrides = effective.get(sub.name)
        global_overrides = effective.get("global")
        merged: dict[str, Any] = dict(sub_overrides) if isinstance(sub_overrides, dict) else {}
        if isinstance(global_overrides, dict):
            merged["global"] = coalesce_values(global_overrides, merged.get("global"))
        findings += _values_findings(
            sub.chart, f"{prefix}{sub.name}.", f"subchart {sub.name}", merged, depth + 1, warnings
        )
    return findings


def images_from_values(chart: Chart, warnings: list[str] | None = None) -> list[ImageFinding]:
    """Image-shaped values in values.yaml of the chart and its subcharts.

    A subchart's values are reported under its alias (or name) as the top chart's users set
    them, with the parent's values applied over the subchart's defaults. A map that is not a
    valid image is a warning appended to ``warnings``.
    """
    sink: list[str] = warnings if warnings is not None else []
    return _values_findings(chart, "", f"chart {chart.metadata.name}", {}, 0, sink)


def images_from_value_paths(chart: Chart, paths: Sequence[str]) -> list[ImageFinding]:
    """Images at value paths named explicitly (for shapes discovery cannot infer)."""
    effective = coalesced_values(chart)
    findings = []
    for path in paths:
        node = resolve_value(effective, path)
        app_version = _owner(chart, path).metadata.app_version
        shaped: _Shaped | None
        if isinstance(node, str):
            try:
                shaped = _Shaped(str(_parse(node)), node, "string")
            except ReferenceFormatError as exc:
                raise ConfigError(f"value path {path!r} is not an image reference: {exc}") from None
        else:
            try:
                # Named explicitly, so read as an image whatever its key is called.
                shaped = _shape("image", node, app_version, f"value path {path!r}")
            except ChartError as exc:
                raise ConfigError(str(exc)) from None
        if shaped is None:
            raise ConfigError(
                f"value path {path!r} holds no image (a reference string or a map with "
                "repository/tag)"
            )
        findings.append(
            ImageFinding(
                shaped.reference,
                shaped.written,
                "config",
                path,
                shaped.form,
                "value path named in the bundle config",
            )
        )
    return findings


def coalesced_values(chart: Chart, depth: int = 0) -> dict[str, Any]:
    """The chart's values with every subchart's defaults under its alias (Helm's view)."""
    values = dict(chart.values)
    for sub in chart.subcharts:
        values[sub.name] = coalesce_values(
            coalesced_values(sub.chart, depth + 1), values.get(sub.name)
        )
    return values


def _owner(chart: Chart, path: str) -> Chart:
    """The (sub)chart whose templates read the value at ``path``."""
    for sub in chart.subcharts:
        if _under(path, sub.name) and path != sub.name:
            return _owner(sub.chart, path[len(sub.name) + 1 :])
    return chart


# ---------------------------------------------------------------------------- annotations


def _truthy(values: dict[str, Any], condition: str) -> bool:
    """Helm's dependency-condition rule: the first of the comma-separated paths that exists."""
    for path in condition.split(","):
        path = path.strip()
        if path and _has_path(values, path):
            return bool(resolve_value(values, path))
    return True


def _annotation_findings(
    chart: Chart, label: str, values: dict[str, Any], warnings: list[str]
) -> list[ImageFinding]:
    findings: list[ImageFinding] = []
    for annotation in IMAGE_ANNOTATIONS:
        text = chart.metadata.annotations.get(annotation)
        if text is None:
            continue
        where = f"{label} annotation {annotation}"
        try:
            doc = parse_yaml(text, where)
        except ChartError as exc:
            warnings.append(f"{exc} (annotation skipped)")
            continue
        if doc is None:
            continue
        if not isinstance(doc, list):
            warnings.append(f"{where}: not a YAML list of {{name, image}} entries (skipped)")
            continue
        for entry in doc:
            image = entry.get("image") if isinstance(entry, dict) else None
            if not isinstance(image, str):
                warnings.append(f"{where}: an entry has no image (skipped)")
                continue
            condition = entry.get("condition") if isinstance(entry, dict) else None
            if isinstance(condition, str) and not _truthy(values, condition):
                continue
            try:
                ref = _parse(image)
            except ReferenceFormatError as exc:
                warnings.append(f"{where}: {image!r} is not an image reference: {exc} (skipped)")
                continue
            findings.append(ImageFinding(str(ref), image, "annotation", None, None, where))
    return findings


def images_from_annotations(
    chart: Chart, values: dict[str, Any] | None = None, warnings: list[str] | None = None
) -> list[ImageFinding]:
    """Images listed in ``helm.sh/images`` / ``artifacthub.io/images`` of chart and subcharts.

    Each annotation is a YAML list of ``{name, image, platforms?, condition?}``; an entry whose
    ``condition`` (a value path, as for dependencies) is false in ``values`` is left out. Entries
    that are not image references are warnings (appended to ``warnings``), not errors.
    """
    effective = values if values is not None else coalesced_values(chart)
    sink: list[str] = warnings if warnings is not None else []
    findings = _annotation_findings(chart, "Chart.yaml", effective, sink)

    def visit(parent: Chart, prefix: str, scope: dict[str, Any]) -> None:
        for sub in parent.subcharts:
            sub_values = scope.get(sub.name)
            sub_scope = dict(sub_values) if isinstance(sub_values, dict) else {}
            if "global" in effective:
                sub_scope["global"] = effective["global"]
            findings.extend(
                _annotation_findings(
                    sub.chart, f"Chart.yaml of subchart {prefix}{sub.name}", sub_scope, sink
                )
            )
            visit(sub.chart, f"{prefix}{sub.name}.", sub_scope)

    visit(chart, "", effective)
    return findings


# ---------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class ImageUse:
    """One place the rendered chart names an image, and how values compose it there.

    ``composition`` is None where no value controls any part of the reference (a literal in a
    template); then promotion rewrites the literal in the chart's templates, or refuses.
    """

    place: str  # "Deployment/web spec.template.spec.containers[0].image"
    where: str  # "Deployment/web container app (hook test)"
    written: str
    composition: str | None
    parts: tuple[Part, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The lock's and ``images --output json``'s object for one use."""
        return {
            "place": self.place,
            "where": self.where,
            "written": self.written,
            "composition": self.composition,
        }


@dataclass
class DiscoveredImage:
    """One image reference with every source that names it and every place that runs it."""

    reference: str
    found_by: set[str] = field(default_factory=set)
    uses: list[ImageUse] = field(default_factory=list)
    value_paths: dict[str, str] = field(default_factory=dict)  # path -> role (or map/string)
    details: list[str] = field(default_factory=list)

    @property
    def rendered(self) -> bool:
        """Whether the rendered chart runs it."""
        return "template" in self.found_by

    def to_json(self) -> dict[str, Any]:
        """The ``images --output json`` object of one image."""
        return {
            "reference": self.reference,
            "rendered": self.rendered,
            "foundBy": sorted(self.found_by),
            "valuePaths": [{"path": p, "form": f} for p, f in sorted(self.value_paths.items())],
            "uses": [u.to_json() for u in self.uses],
            "details": self.details,
        }


@dataclass
class Discovery:
    """What a chart runs (rendered), what else it names (annotations, config, values), warnings.

    ``images`` is what a bundle holds by default: every rendered image, every annotation entry
    whose condition holds, every image the bundle config names. ``disabled`` is what values name
    that the render does not run (components that are off): bundled only when asked.
    """

    images: dict[str, DiscoveredImage]
    disabled: dict[str, DiscoveredImage]
    warnings: list[str]
    settings: RenderSettings | None  # None when the chart was not rendered
    findings: list[ImageFinding]

    def selected(self, include_disabled: bool) -> dict[str, DiscoveredImage]:
        """The images to bundle: ``images``, plus ``disabled`` ones if asked."""
        out = dict(self.images)
        if include_disabled:
            out.update(self.disabled)
        return dict(sorted(out.items()))


def probe_values(chart: Chart, user: dict[str, Any]) -> dict[str, Any]:
    """The values a render of ``chart`` with ``user`` values sees, subcharts' globals at the top."""
    effective = coalesce_values(coalesced_values(chart), user)
    top_global = effective.get("global")
    merged: dict[str, Any] = dict(top_global) if isinstance(top_global, dict) else {}

    def pull(parent: Chart, scope: dict[str, Any]) -> None:
        nonlocal merged
        for sub in parent.subcharts:
            node = scope.get(sub.name)
            if not isinstance(node, dict):
                continue
            sub_global = node.pop("global", None)
            if isinstance(sub_global, dict):
                merged = coalesce_values(sub_global, merged)
            pull(sub.chart, node)

    effective = dict(copy.deepcopy(effective))
    pull(chart, effective)
    if merged:
        effective["global"] = merged
    return effective


def app_versions(chart: Chart) -> dict[tuple[str, ...], str]:
    """The appVersion of the chart and each subchart, keyed by the value path of its values."""
    out: dict[tuple[str, ...], str] = {(): chart.metadata.app_version or ""}

    def visit(parent: Chart, path: tuple[str, ...]) -> None:
        for sub in parent.subcharts:
            out[(*path, sub.name)] = sub.chart.metadata.app_version or ""
            visit(sub.chart, (*path, sub.name))

    visit(chart, ())
    return out


def _add(
    images: dict[str, DiscoveredImage], reference: str, source: str, detail: str
) -> DiscoveredImage:
    entry = images.setdefault(reference, DiscoveredImage(reference))
    entry.found_by.add(source)
    if detail and detail not in entry.details:
        entry.details.append(detail)
    return entry


def rendered_images(
    chart: Chart, helm: Helm, settings: RenderSettings, *, map_values: bool = True
) -> tuple[Scan, dict[str, DiscoveredImage]]:
    """Render the chart, and for each image every place it runs and the values composing it."""
    what = f"{chart.origin}"
    base = scan(helm.template(chart.archive, what, settings))
    controls: dict[Place, list[Control]] = {}
    if map_values and base.images:
        values = probe_values(chart, settings.values)
        relax = relocation_settings(values)

        def render(doc: dict[str, Any]) -> Scan:
            return scan(helm.template(chart.archive, what, settings, [relax, doc]), base.sources)

        controls = value_controls(base, values, render, app_versions(chart))
    weight: Counter[str] = Counter()
    for place_controls in controls.values():
        weight.update({c.path for c in place_controls})
    images: dict[str, DiscoveredImage] = {}
    for image in base.images:
        entry = _add(images, image.reference, "template", "")
        composition = compose(image, controls.get(image.place, []), weight)
        entry.uses.append(
            ImageUse(
                str(image.place),
                image.where,
                image.written,
                composition.text if composition.parts else None,
                composition.parts,
            )
        )
        for part in composition.parts:
            entry.value_paths.setdefault(part.path, part.role)
    return base, images


def discover(
    chart: Chart,
    *,
    helm: str | None,
    value_paths: Sequence[str] = (),
    settings: RenderSettings | None = None,
    extra_images: Sequence[tuple[str, Sequence[str]]] = (),
    map_values: bool = True,
) -> Discovery:
    """Every image of the chart, source by source; ``helm=None`` skips rendering.

    ``extra_images`` are (reference, value paths) pairs named by the bundle config.
    """
    settings = settings or RenderSettings({})
    warnings: list[str] = []
    values = probe_values(chart, settings.values)
    findings = images_from_value_paths(chart, value_paths)
    findings += images_from_annotations(chart, values, warnings)
    value_findings = images_from_values(chart, warnings)
    findings += value_findings
    images: dict[str, DiscoveredImage] = {}
    disabled: dict[str, DiscoveredImage] = {}
    rendered = helm is not None
    if helm is not None:
        base, images = rendered_images(chart, Helm(helm), settings, map_values=map_values)
        warnings += base.warnings
    for finding in findings:
        target = images
        if finding.source == "values" and rendered and finding.reference not in images:
            target = disabled
        entry = _add(target, finding.reference, finding.source, finding.detail)
        if finding.value_path is not None and (finding.source != "values" or not rendered):
            entry.value_paths.setdefault(finding.value_path, finding.value_form or "string")
    for reference, paths in extra_images:
        entry = _add(images, str(_parse(reference)), "config", "named in the bundle config")
        for path in paths:
            node = resolve_value(values, path)  # ConfigError when absent
            entry.value_paths.setdefault(path, "map" if isinstance(node, dict) else "string")
    return Discovery(
        dict(sorted(images.items())),
        dict(sorted(disabled.items())),
        warnings,
        settings if rendered else None,
        list(dict.fromkeys(findings)),
    )
