"""The images a rendered chart runs, read from what ``helm template`` printed.

Three kinds of place name an image:

- ``image`` of every container, init container and ephemeral container, anywhere in any object
  (Pods, every workload kind, CronJobs, custom resources embedding pod templates);
- an ``image`` field outside a container (custom resources' ``spec.image``, e.g. a Prometheus);
- an image-shaped string inside any other string: controller arguments such as
  ``--acme-http01-solver-image=quay.io/jetstack/cert-manager-acmesolver:v1.21.1``, ConfigMap
  data, environment values. Only fully qualified references (a registry host, a path, a tag or a
  digest) count there, so that words and URLs are not taken for images.

Each finding keeps its place (object, field, the whole string and the image's span in it), so
differential rendering can tell which values control which part, and promotion can prove that
every place now names an internal, digest-pinned image. A reference that is not valid is a
warning naming its place, never an abort.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from bundler.adapters.yamlbounds import BoundedSafeLoader
from bundler.errors import ChartError, ReferenceFormatError
from bundler.model.reference import Reference

MAX_WALK_NODES = 2_000_000
CONTAINER_LISTS = {
    "containers": "container",
    "initContainers": "initContainer",
    "ephemeralContainers": "ephemeralContainer",
}
HOOK_ANNOTATION = "helm.sh/hook"

_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})+(?::[0-9]+)?|{_LABEL}:[0-9]+|localhost)"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"sha256:[a-f0-9]{64}"
_EMBEDDED = re.compile(
    rf"(?<![\w./:@-])({_DOMAIN}/{_COMPONENT}(?:/{_COMPONENT})*"
    rf"(?::{_TAG}(?:@{_DIGEST})?|@{_DIGEST}))(?![\w/:@-])"
)


@dataclass(frozen=True)
class Place:
    """Where a string lives in the rendered chart: one object and a field path inside it."""

    object: str  # Kind/name (Kind/namespace/name when the object names a namespace)
    field: str  # e.g. spec.template.spec.containers[0].image

    def __str__(self) -> str:
        return f"{self.object} {self.field}"


@dataclass(frozen=True)
class RenderedImage:
    """One image reference the rendered chart names, with its place and its span in the string."""

    reference: str  # normalised: docker.io/library/nginx:1.25
    written: str  # the substring as rendered
    place: Place
    text: str  # the whole string at the place
    start: int
    end: int
    kind: str  # container, initContainer, ephemeralContainer, field, embedded
    container: str | None
    hook: str | None  # the object's helm.sh/hook annotation (tests are hooks named "test")

    @property
    def where(self) -> str:
        """A human description: ``Deployment/web container app`` (hook noted)."""
        what = f"{self.kind} {self.container}" if self.container else self.place.field
        hook = f" (hook {self.hook})" if self.hook else ""
        return f"{self.place.object} {what}{hook}"


@dataclass
class Scan:
    """Every image of one render, every string by place (for differential renders), warnings.

    ``sources`` are the template files (Helm's ``# Source:`` lines) of the documents that name
    an image: a differential render needs to read only those.
    """

    images: list[RenderedImage]
    strings: dict[Place, str]
    warnings: list[str]
    sources: set[str]


_SEPARATOR = re.compile(r"(?m)^---[ \t]*(?:#.*)?$")
_SOURCE = re.compile(r"(?m)^# Source: (.+?)[ \t]*$")
_CRD = re.compile(r"(?m)^kind:[ \t]*[\"']?CustomResourceDefinition[\"']?[ \t]*$")


def split_documents(text: str) -> list[tuple[str, str]]:
    """(source template, text) of each document of a render, split as Helm splits manifests."""
    out: list[tuple[str, str]] = []
    for chunk in _SEPARATOR.split(text):
        if not chunk.strip():
            continue
        match = _SOURCE.search(chunk)
        out.append((match.group(1) if match else "", chunk))
    return out


def load_documents(text: str, where: str = "rendered templates") -> list[Any]:
    """The YAML documents of a render; ChartError naming the line if it is not YAML."""
    try:
        return list(yaml.load_all(text, Loader=BoundedSafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ChartError(f"{where} are not YAML{line}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ChartError(f"{where} are not YAML: {exc}") from None


def _documents(text: str, sources: set[str] | None) -> Iterator[tuple[str, Any]]:
    """(source, document) of every document worth reading: CRDs run nothing and are skipped."""
    for source, chunk in split_documents(text):
        if sources is not None and source not in sources:
            continue
        if _CRD.search(chunk):
            continue
        where = f"rendered {source}" if source else "rendered templates"
        for doc in load_documents(chunk, where):
            yield source, doc


def _object_names(
    documents: Iterator[tuple[str, Any]],
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(source, label, object): duplicates of a label in one source numbered ``#2``, ``#3``."""
    seen: dict[tuple[str, str], int] = {}
    for source, doc in documents:
        if not isinstance(doc, dict):
            continue
        kind = doc.get("kind") if isinstance(doc.get("kind"), str) else None
        raw = doc.get("metadata")
        metadata: dict[str, Any] = raw if isinstance(raw, dict) else {}
        name = metadata.get("name") if isinstance(metadata.get("name"), str) else None
        namespace = metadata.get("namespace")
        if kind and name:
            label = f"{kind}/{namespace}/{name}" if isinstance(namespace, str) else f"{kind}/{name}"
        else:
            label = f"object in {source or 'the render'}"
        count = seen.get((source, label), 0)
        seen[(source, label)] = count + 1
        yield source, (label if count == 0 else f"{label}#{count + 1}"), doc


def _hook(doc: dict[str, Any]) -> str | None:
    metadata = doc.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    hook = annotations.get(HOOK_ANNOTATION) if isinstance(annotations, dict) else None
    return hook if isinstance(hook, str) and hook else None


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _walk(node: Any, path: str, budget: list[int]) -> Iterator[tuple[str, Any, Any]]:
    """(path, parent, node) for every node; the parent tells container lists apart."""
    stack: list[tuple[str, Any, Any]] = [(path, None, node)]
    while stack:
        budget[0] -= 1
        if budget[0] < 0:
            raise ChartError(f"rendered manifests have more than {MAX_WALK_NODES} nodes")
        current, parent, value = stack.pop()
        yield current, parent, value
        items: list[tuple[str, Any, Any]]
        if isinstance(value, dict):
            items = [(_join(current, str(k)), value, v) for k, v in value.items()]
        elif isinstance(value, list):
            items = [(_join(current, i), value, v) for i, v in enumerate(value)]
        else:
            continue
        stack.extend(reversed(items))


def _container_field(path: str) -> tuple[str, int] | None:
    """For ``....containers[3].image``: the container kind and index; else None."""
    match = re.search(r"\.?(containers|initContainers|ephemeralContainers)\[(\d+)\]\.image$", path)
    if match is None:
        return None
    return CONTAINER_LISTS[match.group(1)], int(match.group(2))


def _parse(text: str) -> Reference | None:
    try:
        return Reference.parse(text)
    except ReferenceFormatError:
        return None


def _image_field(
    place: Place, value: str, parent: Any, hook: str | None, warnings: list[str]
) -> RenderedImage | bool | None:
    """A container's ``image`` (or an ``image`` field): the image, False if it is not one."""
    container = _container_field(place.field)
    if container is None and not (place.field.endswith(".image") or place.field == "image"):
        return None  # not an image field: look inside the string instead
    kind = container[0] if container else "field"
    name = str(parent.get("name", "?")) if container and isinstance(parent, dict) else None
    ref = _parse(value) if container or re.search(r"[/:@]", value) else None
    if ref is not None:
        return RenderedImage(str(ref), value, place, value, 0, len(value), kind, name, hook)
    if container is None:
        return None
    warnings.append(
        f"rendered {place.object} {kind} {name}: image {value!r} is not a valid image "
        "reference (skipped)"
    )
    return False


def _embedded(place: Place, value: str, hook: str | None) -> Iterator[RenderedImage]:
    for match in _EMBEDDED.finditer(value):
        written = match.group(1).rstrip(".")
        ref = _parse(written)
        if ref is not None:
            start = match.start(1)
            end = start + len(written)
            yield RenderedImage(str(ref), written, place, value, start, end, "embedded", None, hook)


def scan(text: str, sources: set[str] | None = None) -> Scan:
    """Every image the rendered manifests name, every string by place, and the warnings.

    With ``sources``, only documents of those template files are read.
    """
    images: list[RenderedImage] = []
    strings: dict[Place, str] = {}
    warnings: list[str] = []
    found_in: set[str] = set()
    budget = [MAX_WALK_NODES]
    for source, label, doc in _object_names(_documents(text, sources)):
        hook = _hook(doc)
        before = len(images)
        for path, parent, value in _walk(doc, "", budget):
            if not isinstance(value, str):
                continue
            place = Place(label, path)
            strings[place] = value
            field = _image_field(place, value, parent, hook, warnings)
            if isinstance(field, RenderedImage):
                images.append(field)
            elif field is None:
                images.extend(_embedded(place, value, hook))
        if len(images) > before:
            found_in.add(source)
    return Scan(images, strings, warnings, found_in)
