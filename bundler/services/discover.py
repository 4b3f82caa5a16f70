"""Which images does a chart run? Four sources, each finding saying where it came from.

1. ``config``: value paths the bundle config names explicitly (``images_from_value_paths``).
2. ``annotation``: the ``helm.sh/images`` / ``artifacthub.io/images`` Chart.yaml annotations.
3. ``values``: image-shaped values in values.yaml of the chart and its subcharts, at the value
   path a user (or a relocation) sets them under.
4. ``template``: every container of every object ``helm template`` renders.

Findings are kept per source rather than merged, so a reader can see that the values and the
rendered templates agree, and a relocation knows which value paths carry which image.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from bundler.adapters.chart import Chart, parse_yaml
from bundler.adapters.yamlbounds import BoundedSafeLoader
from bundler.errors import ChartError, ConfigError, ReferenceFormatError, UsageError
from bundler.model.reference import Reference

Source = Literal["config", "annotation", "values", "template"]
ValueForm = Literal["string", "map"]

IMAGE_ANNOTATIONS = ("helm.sh/images", "artifacthub.io/images")
CONTAINER_LISTS = {
    "containers": "container",
    "initContainers": "initContainer",
    "ephemeralContainers": "ephemeralContainer",
}
HELM_ENV = "BUNDLER_HELM"
HELM_TIMEOUT = 120.0
MAX_RENDERED_BYTES = 64 * 1024 * 1024
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


def _merge(defaults: Any, overrides: Any) -> Any:
    """Helm's coalescing: maps merge key by key, anything else in ``overrides`` replaces."""
    if isinstance(defaults, dict) and isinstance(overrides, dict):
        out = dict(defaults)
        for key, value in overrides.items():
            out[key] = _merge(defaults.get(key), value) if key in defaults else value
        return out
    return overrides if overrides is not None else defaults


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


def _values_findings(
    chart: Chart, prefix: str, label: str, overrides: dict[str, Any], depth: int
) -> list[ImageFinding]:
    """Image-shaped values of ``chart``, reported at their path in the top chart's values.

    The chart's values.yaml is taken under ``overrides`` from the charts above it.
    """
    effective = _merge(chart.values, overrides)
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
        shaped = _shape(key, node, chart.metadata.app_version, f"values.yaml value {full!r}")
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
            merged["global"] = _merge(global_overrides, merged.get("global"))
        findings += _values_findings(
            sub.chart, f"{prefix}{sub.name}.", f"subchart {sub.name}", merged, depth + 1
        )
    return findings


def images_from_values(chart: Chart) -> list[ImageFinding]:
    """Image-shaped values in values.yaml of the chart and its subcharts.

    A subchart's values are reported under its alias (or name) as the top chart's users set
    them, with the parent's values applied over the subchart's defaults.
    """
    return _values_findings(chart, "", f"chart {chart.metadata.name}", {}, 0)


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
        values[sub.name] = _merge(coalesced_values(sub.chart, depth + 1), values.get(sub.name))
    return values


def _owner(chart: Chart, path: str) -> Chart:
    """The (sub)chart whose templates read the value at ``path``."""
    for sub in chart.subcharts:
        if _under(path, sub.name) and path != sub.name:
            return _owner(sub.chart, path[len(sub.name) + 1 :])
    return chart


# ---------------------------------------------------------------------------- annotations


def _annotation_findings(chart: Chart, label: str) -> list[ImageFinding]:
    findings: list[ImageFinding] = []
    for annotation in IMAGE_ANNOTATIONS:
        text = chart.metadata.annotations.get(annotation)
        if text is None:
            continue
        where = f"{label} annotation {annotation}"
        doc = parse_yaml(text, where)
        if doc is None:
            continue
        if not isinstance(doc, list):
            raise ChartError(f"{where}: not a YAML list of {{name, image}} entries")
        for entry in doc:
            image = entry.get("image") if isinstance(entry, dict) else None
            if not isinstance(image, str):
                raise ChartError(f"{where}: an entry has no image")
            try:
                ref = _parse(image)
            except ReferenceFormatError as exc:
                raise ChartError(f"{where}: {exc}") from None
            findings.append(ImageFinding(str(ref), image, "annotation", None, None, where))
    return findings


def images_from_annotations(chart: Chart) -> list[ImageFinding]:
    """Images listed in ``helm.sh/images`` / ``artifacthub.io/images`` of chart and subcharts.

    Each annotation is a YAML list of ``{name, image, platforms?}``.
    """
    findings = _annotation_findings(chart, "Chart.yaml")

    def visit(parent: Chart, depth: int) -> None:
        for sub in parent.subcharts:
            findings.extend(_annotation_findings(sub.chart, f"Chart.yaml of subchart {sub.name}"))
            visit(sub.chart, depth + 1)

    visit(chart, 0)
    return findings


# ---------------------------------------------------------------------------- templates


def _containers(node: Any, budget: list[int]) -> Iterator[tuple[str, dict[str, Any]]]:
    budget[0] -= 1
    if budget[0] < 0:
        raise ChartError(f"rendered manifests have more than {MAX_WALK_NODES} nodes")
    if isinstance(node, dict):
        for key, value in node.items():
            kind = CONTAINER_LISTS.get(key) if isinstance(key, str) else None
            if kind is not None and isinstance(value, list):
                for container in value:
                    if isinstance(container, dict) and "image" in container:
                        yield kind, container
            yield from _containers(value, budget)
    elif isinstance(node, list):
        for value in node:
            yield from _containers(value, budget)


def images_in_manifests(text: str) -> list[ImageFinding]:
    """Every container image in a multi-document YAML stream of Kubernetes objects.

    That is any ``containers``/``initContainers``/``ephemeralContainers`` list anywhere in any
    object, so Pods, workloads, CronJobs and custom resources alike.
    """
    try:
        documents = list(yaml.load_all(text, Loader=BoundedSafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ChartError(f"rendered templates are not YAML{line}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ChartError(f"rendered templates are not YAML: {exc}") from None
    findings: list[ImageFinding] = []
    budget = [MAX_WALK_NODES]
    for doc in documents:
        if not isinstance(doc, dict):
            continue
        kind = doc.get("kind") or "object"
        metadata = doc.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        obj = f"{kind}/{name}" if name else str(kind)
        for container_kind, container in _containers(doc, budget):
            image = container["image"]
            detail = f"{obj} {container_kind} {container.get('name', '?')}"
            if not isinstance(image, str):
                raise ChartError(f"rendered {detail}: image is not a string")
            try:
                ref = _parse(image)
            except ReferenceFormatError as exc:
                raise ChartError(f"rendered {detail}: {exc}") from None
            findings.append(ImageFinding(str(ref), image, "template", None, None, detail))
    return findings


def render(
    chart: Chart,
    helm: str,
    values_files: Sequence[Path] = (),
    release: str = "bundle",
    namespace: str = "default",
) -> str:
    """``helm template`` of the chart's archive bytes (exactly what a bundle ships)."""
    with tempfile.TemporaryDirectory(prefix="bundler-chart-") as tmp:
        archive = Path(tmp) / f"{chart.metadata.name}-{chart.metadata.version}.tgz"
        archive.write_bytes(chart.archive)
        argv = [helm, "template", release, str(archive), "--namespace", namespace]
        for values_file in values_files:
            if not values_file.is_file():
                raise UsageError(f"values file {values_file} does not exist")
            argv += ["--values", str(values_file)]
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                timeout=HELM_TIMEOUT,
                check=False,
                cwd=tmp,
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise UsageError(f"helm binary {helm} not found") from None
        except subprocess.TimeoutExpired:
            raise ChartError(
                f"helm template {chart.origin} did not finish in {HELM_TIMEOUT:.0f}s"
            ) from None
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
        first = next((ln for ln in lines if ln.startswith("Error")), lines[0] if lines else "")
        raise ChartError(f"helm template of {chart.origin} failed: {first or 'no message'}")
    if len(proc.stdout) > MAX_RENDERED_BYTES:
        raise ChartError(f"helm template of {chart.origin}: output over {MAX_RENDERED_BYTES} bytes")
    return proc.stdout.decode(errors="replace")


def images_from_templates(
    chart: Chart,
    helm: str,
    values_files: Sequence[Path] = (),
    release: str = "bundle",
    namespace: str = "default",
) -> list[ImageFinding]:
    """Images of every container the rendered chart runs (``helm template``)."""
    return images_in_manifests(render(chart, helm, values_files, release, namespace))


# ---------------------------------------------------------------------------- all together


def find_helm(explicit: str | None = None) -> str | None:
    """``explicit``, else ``$BUNDLER_HELM``, else ``helm`` on PATH; ``None`` if there is none.

    A binary named explicitly (argument or environment) that is missing is a usage error.
    """
    for named, how in ((explicit, "--helm"), (os.environ.get(HELM_ENV), f"${HELM_ENV}")):
        if named:
            found = shutil.which(named)
            if found is None:
                raise UsageError(f"helm binary {named!r} ({how}) not found or not executable")
            return os.path.abspath(found)  # helm runs in a scratch directory
    found = shutil.which("helm")
    return os.path.abspath(found) if found else None


def discover(
    chart: Chart,
    *,
    helm: str | None,
    value_paths: Sequence[str] = (),
    values_files: Sequence[Path] = (),
) -> list[ImageFinding]:
    """All findings, source by source (config, annotation, values, template), in a stable order.

    Only findings identical in every field are merged. ``helm=None`` skips rendering.
    """
    findings = images_from_value_paths(chart, value_paths)
    findings += images_from_annotations(chart)
    findings += images_from_values(chart)
    if helm is not None:
        findings += images_from_templates(chart, helm, values_files)
    return list(dict.fromkeys(findings))
