"""Which values control which part of each rendered image: found by rendering, not guessed.

Differential rendering: every candidate value (the keys of image maps, present or not:
``registry``/``repository``/``name``/``image``/``tag``/``digest``; values whose key names a
registry or an image, such as ``global.imageRegistry`` or ``imageNamespace``; strings shaped like
image references) is set to a unique marker, a few kinds at a time, and the chart is rendered
again. Where a marker shows up in place of a part of an image reference, that value controls that
part, and the text around it shows how the chart composes the reference (registry + repository
+ tag + digest, prefixes such as ``v``, separators the chart adds when a digest is set).

Batches that do not render (a marker broke a ``required`` or a version check) are split until
the culprit is alone and dropped; markers whose effect cannot be read in a batch (two of them in
one string with the text between them changed) are rendered alone. Everything is bounded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bundler.errors import ChartError, ReferenceFormatError
from bundler.model.reference import Reference
from bundler.services.rendered import Place, RenderedImage, Scan

MAX_CANDIDATES = 4000
MAX_ALONE = 96  # markers rendered one at a time, at most
MAP_KEYS = ("registry", "repository", "name", "image", "tag", "digest")
ABSENT_KEYS = ("tag", "digest")  # set even where the chart's values do not have them
ROUNDS = ("registry", "repository", "name", "part", "tag", "digest", "reference")

_TOKEN = re.compile(r"bm(\d+)x|sha256:ba5e([0-9a-f]{60})")


@dataclass(frozen=True)
class Candidate:
    """One value to probe: its path in the top chart's values, its kind, and whether it is set."""

    path: tuple[str, ...]
    role: str  # one of ROUNDS
    empty: bool  # absent, null or "" in the values the chart renders with
    like: str = ""  # for tags: the tag it has now, else the owning chart's appVersion

    @property
    def dotted(self) -> str:
        """``a.b.c``: the path as users write it (``--set a.b.c=...``)."""
        return ".".join(self.path)


@dataclass(frozen=True)
class Control:
    """A value controlling the span ``[start, end)`` of a rendered string.

    Where the value was empty and the chart adds a separator with it when it is set, ``start ==
    end`` is where it goes and ``insert`` is the separator: in front of the value (a digest:
    ``@``), or after it when ``after`` (a registry prefixed with ``/``).
    """

    path: str
    start: int
    end: int
    insert: str = ""
    after: bool = False


def marker(number: int, role: str, like: str = "") -> str:
    """The unique marker of candidate ``number``: shaped so that charts accept it for its kind.

    A tag marker is the tag it replaces (or the chart's appVersion) with a prerelease suffix, so
    that version checks in templates (``semverCompare``) still pass.
    """
    if role == "registry":
        return f"bm{number}x.example"
    if role == "tag":
        base = like if re.fullmatch(r"v?\d+(\.\d+){0,2}([-.][0-9A-Za-z.-]+)?", like) else "0.0.0"
        return f"{base}-bm{number}x"
    if role == "digest":
        return f"sha256:ba5e{number:060x}"
    if role == "reference":
        return f"bm{number}x.example/bm{number}x:0.0.{number}"
    return f"bm{number}x"


# ---------------------------------------------------------------------------- candidates


def _imageish(key: str) -> bool:
    lower = key.lower()
    return "image" in lower or "registry" in lower or lower == "repository"


def _looks_like_reference(text: str) -> bool:
    if not ("/" in text or ":" in text.rpartition("/")[2] or "@" in text) or " " in text:
        return False
    try:
        Reference.parse(text)
    except ReferenceFormatError:
        return False
    return True


def _is_image_map(key: str, node: dict[str, Any]) -> bool:
    if key.lower().endswith("image") and any(k in node for k in MAP_KEYS):
        return True
    repository = node.get("repository")
    return isinstance(repository, str) or ("registry" in node and "tag" in node)


def _scalar(value: Any) -> bool:
    return value is None or (isinstance(value, str | int | float) and not isinstance(value, bool))


class _Collector:
    """Candidates in the order found, one per path, bounded."""

    def __init__(self, app_versions: dict[tuple[str, ...], str]) -> None:
        self.found: dict[tuple[str, ...], Candidate] = {}
        self.versions = app_versions

    def _owner_version(self, path: tuple[str, ...]) -> str:
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.versions:
                return self.versions[path[:cut]]
        return ""

    def add(self, path: tuple[str, ...], role: str, value: Any) -> None:
        if path in self.found or len(self.found) >= MAX_CANDIDATES:
            return
        empty = value in (None, "")
        like = self._owner_version(path) if empty else str(value)
        self.found[path] = Candidate(path, role, empty, like if role == "tag" else "")

    def image_map(self, here: tuple[str, ...], node: dict[str, Any]) -> None:
        for sub in MAP_KEYS:
            if sub in node and _scalar(node[sub]):
                role = sub
                if sub == "image":
                    role = "reference" if _looks_like_reference(str(node[sub])) else "repository"
                self.add((*here, sub), role, node[sub])
        for sub in ABSENT_KEYS:
            if sub not in node:
                self.add((*here, sub), sub, None)

    def leaf(self, here: tuple[str, ...], key: str, value: Any) -> None:
        text = "" if value is None else str(value)
        if text and _looks_like_reference(text):
            self.add(here, "reference", value)
        elif _imageish(key):
            self.add(here, "registry" if "registry" in key.lower() else "part", value)

    def visit(self, node: dict[str, Any], path: tuple[str, ...], depth: int) -> None:
        if depth > 40:
            return
        for key, value in node.items():
            if not isinstance(key, str) or "." in key:
                continue  # a dotted key cannot be named by a dotted path
            here = (*path, key)
            if isinstance(value, dict):
                if _is_image_map(key, value):
                    self.image_map(here, value)
                self.visit(value, here, depth + 1)
            elif _scalar(value):
                self.leaf(here, key, value)


def candidates(
    values: dict[str, Any], app_versions: dict[tuple[str, ...], str] | None = None
) -> list[Candidate]:
    """Every value worth probing in ``values`` (the chart's defaults under the user's values).

    ``app_versions`` maps the value path of each (sub)chart (``()`` for the top chart) to its
    appVersion, which a tag left empty usually defaults to.
    """
    collector = _Collector(app_versions or {})
    collector.visit(values, (), 0)
    return list(collector.found.values())


def overlay(assigned: Sequence[tuple[Candidate, str]]) -> dict[str, Any]:
    """A values document setting each candidate's path to its marker."""
    doc: dict[str, Any] = {}
    for candidate, text in assigned:
        node = doc
        for part in candidate.path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[candidate.path[-1]] = text
    return doc


# ---------------------------------------------------------------------------- alignment


def _found_markers(text: str, mine: dict[int, str]) -> list[tuple[int, int, str]]:
    """(position, candidate number, marker) of every marker of ``mine`` in ``text``, in order."""
    out: set[tuple[int, int, str]] = set()
    for match in _TOKEN.finditer(text):
        number = int(match.group(1)) if match.group(1) else int(match.group(2), 16)
        known = mine.get(number)
        if known is None:
            continue
        # the token sits inside its marker: find the marker occurrence around this token
        at = text.find(known, max(0, match.end() - len(known)))
        while at != -1 and at <= match.start():
            if at + len(known) >= match.end():
                out.add((at, number, known))
                break
            at = text.find(known, at + 1)
    return sorted(out)


def align(
    base: str, changed: str, found: list[tuple[int, int, str]]
) -> dict[int, tuple[int, int]] | None:
    """The span of ``base`` each marker of ``changed`` replaced, or None if they do not line up."""
    pattern, pos, order = "", 0, []
    for at, number, text in found:
        if at < pos:
            return None  # overlapping markers
        pattern += re.escape(changed[pos:at]) + "(.*?)"
        order.append(number)
        pos = at + len(text)
    pattern += re.escape(changed[pos:])
    match = re.fullmatch(pattern, base, re.DOTALL)
    if match is None:
        return None
    return {number: match.span(i + 1) for i, number in enumerate(order)}


def _insert(
    base: str, changed: str, found: list[tuple[int, int, str]]
) -> tuple[int, str, bool] | None:
    """For one marker the chart added with a separator: position, separator, and where it is.

    The separator follows the value (``REGISTRY/`` in front of a repository) or precedes it
    (``@DIGEST`` after a tag).
    """
    if len(found) != 1:
        return None
    at, _, text = found[0]
    end = at + len(text)
    for sep in ("@", ":", "/", "-"):
        start = at - len(sep)
        if start >= 0 and changed[start:at] == sep and changed[:start] + changed[end:] == base:
            return start, sep, False
    for sep in ("/", "-"):
        if (
            changed[end : end + len(sep)] == sep
            and changed[:at] + changed[end + len(sep) :] == base
        ):
            return at, sep, True
    return None


# ---------------------------------------------------------------------------- rendering


Render = Callable[[dict[str, Any]], Scan]


@dataclass
class _Probe:
    assigned: list[tuple[Candidate, str]]
    scan: Scan | None = None


def _render_batches(render: Render, batches: list[list[tuple[Candidate, str]]]) -> list[_Probe]:
    """Render each batch; a batch that fails is split until the failing candidates are alone."""
    done: list[_Probe] = []
    pending = [b for b in batches if b]
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while pending:
            futures = [(batch, pool.submit(_try, render, batch)) for batch in pending]
            pending = []
            for batch, future in futures:
                result = future.result()
                if result is not None:
                    done.append(_Probe(batch, result))
                elif len(batch) > 1:
                    half = len(batch) // 2
                    pending += [batch[:half], batch[half:]]
    return done


def _try(render: Render, batch: list[tuple[Candidate, str]]) -> Scan | None:
    try:
        return render(overlay(batch))
    except ChartError:
        return None


@dataclass
class _Reading:
    """What the probes found so far: controls by place, markers to render alone."""

    base: Scan
    numbered: list[tuple[Candidate, str]]
    out: dict[Place, list[Control]]
    retry: dict[int, tuple[Candidate, str]] = field(default_factory=dict)

    def read(self, probe: _Probe, alone: bool) -> None:
        assert probe.scan is not None
        number_of = {text: i for i, (_, text) in enumerate(self.numbered)}
        mine = {number_of[text]: text for _, text in probe.assigned}
        for place in self.out:
            changed = probe.scan.strings.get(place)
            original = self.base.strings[place]
            if changed is None or changed == original:
                continue
            hits = _found_markers(changed, mine)
            if hits and not self._record(place, original, changed, hits) and not alone:
                for _, number, _ in hits:
                    self.retry.setdefault(number, self.numbered[number])

    def _record(
        self, place: Place, original: str, changed: str, hits: list[tuple[int, int, str]]
    ) -> bool:
        spans = align(original, changed, hits)
        if spans is not None:
            for number, (start, end) in spans.items():
                self.out[place].append(Control(self.numbered[number][0].dotted, start, end))
            return True
        inserted = _insert(original, changed, hits)
        candidate = self.numbered[hits[0][1]][0]
        if inserted is not None and candidate.empty:
            start, sep, after = inserted
            self.out[place].append(Control(candidate.dotted, start, start, sep, after))
            return True
        return False


def controls(
    base: Scan,
    values: dict[str, Any],
    render: Render,
    app_versions: dict[tuple[str, ...], str] | None = None,
) -> dict[Place, list[Control]]:
    """For every place of ``base`` that names an image: the values controlling its parts."""
    found = candidates(values, app_versions)
    numbered = [(c, marker(i, c.role, c.like)) for i, c in enumerate(found)]
    reading = _Reading(base, numbered, {image.place: [] for image in base.images})
    batches = [[(c, m) for c, m in numbered if c.role == role] for role in ROUNDS]
    for probe in _render_batches(render, batches):
        reading.read(probe, False)
    alone = list(reading.retry.values())[:MAX_ALONE]
    for probe in _render_batches(render, [[item] for item in alone]):
        reading.read(probe, True)
    return {
        p: sorted(set(c), key=lambda x: (x.start, x.end, x.path)) for p, c in reading.out.items()
    }


# ---------------------------------------------------------------------------- composition


@dataclass(frozen=True)
class Part:
    """One value of a composition, with the part of the reference it sets."""

    path: str
    role: str  # registry, repository, tag, digest, reference, part


@dataclass(frozen=True)
class Composition:
    """How the chart composes one rendered image from values.

    ``text`` is the written reference with each controlled part replaced by ``{path}`` (or
    ``{@path}`` where the chart adds ``@`` and the value when it is set, ``{path/}`` where it
    adds the value and ``/``), e.g.
    ``{controller.image.registry}/{controller.image.image}:{controller.image.tag}{@controller.image.digest}``.
    """

    text: str
    parts: tuple[Part, ...]


def _sections(written: str) -> tuple[int, int | None, int | None]:
    """End of the registry (0 when none), start of ``:tag`` and of ``@digest`` in ``written``."""
    at = written.find("@")
    name = written if at == -1 else written[:at]
    colon = name.rfind(":")
    tag = colon if colon > name.rfind("/") else None
    first, slash, _ = name.partition("/")
    registry = len(first) if slash and ("." in first or ":" in first or first == "localhost") else 0
    return registry, tag, (at if at != -1 else None)


def _role(written: str, start: int, end: int, insert: str, after: bool = False) -> str:
    if after and insert == "/" and start == 0:
        return "registry"  # prefixed to the reference when set
    registry, tag, digest = _sections(written)
    name_end = tag if tag is not None else (digest if digest is not None else len(written))
    if insert == "@" or (digest is not None and start == digest + 1 and end == len(written)):
        return "digest"
    if start == 0 and end == len(written):
        return "reference"
    if registry and start == 0 and end == registry:
        return "registry"
    if end <= name_end:
        # A repository value may carry the registry host too (quay.io/argoproj/argocd).
        return "repository" if start >= registry or (start == 0 and end == name_end) else "part"
    if tag is not None and start > tag and (digest is None or end <= digest):
        return "tag"
    return "part"


def compose(
    image: RenderedImage, place_controls: list[Control], weight: dict[str, int]
) -> Composition:
    """The composition of one image from the controls of its place.

    Where several values control one span (a component's own key and a global default), the one
    controlling the fewest places wins: it is the most specific.
    """
    inside = [c for c in place_controls if image.start <= c.start and c.end <= image.end]
    best: dict[tuple[int, int, str, bool], Control] = {}
    for control in inside:
        key = (control.start, control.end, control.insert, control.after)
        current = best.get(key)
        rank = (weight.get(control.path, 0), -len(control.path), control.path)
        if current is None or rank < (
            weight.get(current.path, 0),
            -len(current.path),
            current.path,
        ):
            best[key] = control
    chosen: list[Control] = []
    for control in sorted(best.values(), key=lambda c: (c.start, c.end - c.start)):
        if chosen and control.start < chosen[-1].end:
            continue  # overlaps a finer part already chosen
        if (
            control.insert
            and chosen
            and control.start == chosen[-1].end
            and chosen[-1].insert
            and control.after == chosen[-1].after
        ):
            continue
        chosen.append(control)
    written = image.written
    text, pos, parts = "", image.start, []
    for control in chosen:
        text += _escape(image.text[pos : control.start])
        start, end = control.start - image.start, control.end - image.start
        sep_before, sep_after = ("", control.insert) if control.after else (control.insert, "")
        text += "{" + sep_before + control.path + sep_after + "}"
        parts.append(Part(control.path, _role(written, start, end, control.insert, control.after)))
        pos = control.end
    text += _escape(image.text[pos : image.end])
    return Composition(text, tuple(parts))


def _escape(literal: str) -> str:
    return literal.replace("{", "{{").replace("}", "}}")


def parse_composition(text: str) -> Iterator[tuple[str, str, str, str]]:
    """The pieces of a composition: ``("literal", text, "", "")`` or ``("value", path, b, a)``.

    ``b``/``a`` is the separator the chart adds before/after a value that is empty as written
    (``{@path}``: ``@`` before it; ``{path/}``: ``/`` after it).
    """
    pos, literal = 0, ""
    while pos < len(text):
        char = text[pos]
        if char in "{}" and text[pos : pos + 2] in ("{{", "}}"):
            literal += char
            pos += 2
            continue
        if char == "{":
            end = text.find("}", pos)
            if end == -1:
                raise ValueError(f"composition {text!r}: unclosed '{{'")
            body = text[pos + 1 : end]
            before = body[0] if body[:1] in ("@", ":", "/", "-") else ""
            after = body[-1] if len(body) > 1 and not before and body[-1] in "/-" else ""
            if literal:
                yield "literal", literal, "", ""
                literal = ""
            yield "value", body[len(before) : len(body) - len(after)], before, after
            pos = end + 1
            continue
        literal += char
        pos += 1
    if literal:
        yield "literal", literal, "", ""


# Values a chart must be given before it renders images from another registry. Bitnami charts
# refuse substituted images unless told the substitution is deliberate (a mirror is exactly that).
RELOCATION_SETTINGS: tuple[tuple[tuple[str, ...], Any], ...] = (
    (("global", "security", "allowInsecureImages"), True),
)


def relocation_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The settings of :data:`RELOCATION_SETTINGS` the chart has, as a values document."""
    doc: dict[str, Any] = {}
    for path, wanted in RELOCATION_SETTINGS:
        node: Any = values
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, type(wanted)) and node != wanted:
            cursor = doc
            for part in path[:-1]:
                cursor = cursor.setdefault(part, {})
            cursor[path[-1]] = wanted
    return doc
