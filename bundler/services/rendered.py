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
    """Every image of one render, every string by place (for differential renders), warnings."""

    images: list[RenderedImage]
    strings: dict[Place, str]
    warnings: list[str]


def load_documents(text: str) -> list[Any]:
    """The YAML documents of a render; ChartError naming the line if it is not YAML."""
    try:
        return list(yaml.load_all(text, Loader=BoundedSafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ChartError(f"rendered templates are not YAML{line}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ChartError(f"rendered templates are not YAML: {exc}") from None


def _object_names(documents: list[Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    seen: dict[str, int] = {}
    for number, doc in enumerate(documents):
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
            label = f"document {number + 1}"
        count = seen.get(label, 0)
        seen[label] = count + 1
        yield (label if count == 0 else f"{label}#{count + 1}"), doc


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


def scan(text: str) -> Scan:
    """Every image the rendered manifests name, every string by place, and the warnings."""
    documents = load_documents(text)
    images: list[RenderedImage] = []
    strings: dict[Place, str] = {}
    warnings: list[str] = []
    budget = [MAX_WALK_NODES]
    for label, doc in _object_names(documents):
        hook = _hook(doc)
        for path, parent, value in _walk(doc, "", budget):
            if not isinstance(value, str):
                continue
            place = Place(label, path)
            strings[place] = value
            container = _container_field(path)
            if container is not None or path.endswith(".image") or path == "image":
                kind = container[0] if container else "field"
                name = None
                if container is not None and isinstance(parent, dict):
                    name = str(parent.get("name", "?"))
                ref = _parse(value) if container or re.search(r"[/:@]", value) else None
                if ref is not None:
                    images.append(
                        RenderedImage(
                            str(ref), value, place, value, 0, len(value), kind, name, hook
                        )
                    )
                    continue
                if container is not None:
                    warnings.append(
                        f"rendered {place.object} {kind} {name}: image {value!r} is not a valid "
                        "image reference (skipped)"
                    )
                    continue
            for match in _EMBEDDED.finditer(value):
                written = match.group(1).rstrip(".")
                ref = _parse(written)
                if ref is None:
                    continue
                start = match.start(1)
                images.append(
                    RenderedImage(
                        str(ref),
                        written,
                        place,
                        value,
                        start,
                        start + len(written),
                        "embedded",
                        None,
                        hook,
                    )
                )
    return Scan(images, strings, warnings)
