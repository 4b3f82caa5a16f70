"""Promotion's chart rewrite: set the values that compose each image, rewrite literals, prove it.

The lock records, for every place the rendered chart runs an image, how values compose the
reference there (``{global.image.registry}/{controller.image.image}:{controller.image.tag}``).
Promotion solves each composition for the relocated, digest-pinned reference: the values in the
name part take the internal registry and repository (the literal text between them kept), the
tag stays as the chart renders it, and the digest goes into the digest value, or after the value
that ends the reference (``tag@sha256:...``). A reference no value controls is rewritten in the
chart's template files when the literal occurs there and only there.

Nothing of this is taken on trust: :func:`prove` renders the promoted chart as Argo CD will
(its own values, the same kube and API versions) and every image it runs must be under the
internal prefix, pinned by digest, and one the promotion copies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bundler.errors import ReferenceFormatError
from bundler.model.bundle import BundleLock, LockedUse
from bundler.model.reference import Reference
from bundler.model.relocation import Relocation, coalesce_values, set_value
from bundler.services.rendered import scan
from bundler.services.valuemap import parse_composition

_REF_CHARS = re.compile(r"[A-Za-z0-9._/:@-]")


class Unsolvable(Exception):
    """A composition that no setting of its values turns into the relocated reference."""


def _target_text(written: str, relocation: Relocation) -> str:
    """The relocated reference in the form the chart renders: ``host/repo[:tag]@digest``."""
    ref = Reference.parse(written)
    tag = f":{ref.tag}" if _has_tag(written) and ref.tag else ""
    return f"{relocation.registry}/{relocation.repository}{tag}@{relocation.digest}"


def _has_tag(written: str) -> bool:
    name = written.partition("@")[0]
    return name.rfind(":") > name.rfind("/")


def _name_end(written: str) -> int:
    at = written.find("@")
    name = written if at == -1 else written[:at]
    colon = name.rfind(":")
    return colon if colon > name.rfind("/") else len(name)


@dataclass(frozen=True)
class Span:
    """Where one value of a composition sits in the reference as written."""

    path: str
    start: int
    end: int
    before: str = ""  # separator the chart adds in front of the value once it is set
    after: str = ""  # ... or after it

    @property
    def added(self) -> bool:
        """A value that is empty as written and comes with a separator when set."""
        return bool(self.before or self.after)


def _locate(composition: str, written: str) -> list[Span]:
    """Where each value of ``composition`` sits in ``written`` (an added value is empty)."""
    pieces = list(parse_composition(composition))
    pattern = "".join(
        re.escape(text) if kind == "literal" else ("" if before or after else "(.*?)")
        for kind, text, before, after in pieces
    )
    match = re.fullmatch(pattern, written, re.DOTALL)
    if match is None:
        raise Unsolvable(f"the composition {composition!r} does not give {written!r}")
    spans: list[Span] = []
    group, pos = 0, 0
    for kind, text, before, after in pieces:
        if kind == "literal":
            pos += len(text)
        elif before or after:
            spans.append(Span(text, pos, pos, before, after))
        else:
            group += 1
            start, end = match.span(group)
            spans.append(Span(text, start, end))
            pos = end
    return spans


def _solve_name(
    spans: list[Span], written: str, new_name: str, fixed: dict[str, str]
) -> dict[str, str]:
    """Values in the name part take ``new_name``; the chart's literal text between them stays.

    A value the chart adds with a separator (a registry prefix) counts with the value ``fixed``
    gives it (set for another image), or as absent.
    """
    name_end = _name_end(written)
    in_name = [s for s in spans if s.start < name_end and not s.added]
    if not in_name:
        raise Unsolvable(f"no value controls the repository of {written}")
    pattern, cursor, groups = "", 0, []
    for span in spans:
        if span.start >= name_end:
            continue
        if span.added:
            if span.before == "@" or span.path not in fixed:
                continue
            pattern += re.escape(written[cursor : span.start])
            pattern += re.escape(span.before + fixed[span.path] + span.after)
            cursor = span.start
            continue
        pattern += re.escape(written[cursor : span.start])
        pattern += "(.*)" if span is in_name[-1] else "(.*?)"
        groups.append(span)
        cursor = min(span.end, name_end)
    pattern += re.escape(written[cursor:name_end])
    match = re.fullmatch(pattern, new_name, re.DOTALL)
    if match is None:
        raise Unsolvable(
            f"the chart composes {written} with fixed text {written[:name_end]!r} that "
            f"{new_name} does not keep"
        )
    # A value reaching past the name (a whole "repo:tag") keeps its tag part as written.
    return {
        span.path: match.group(index + 1) + written[max(span.start, name_end) : span.end]
        for index, span in enumerate(groups)
    }


def _solve_digest(spans: list[Span], written: str, digest: str, values: dict[str, str]) -> None:
    """The digest goes into its own value, else after the value that ends the reference."""
    own = next(
        (
            s
            for s in spans
            if s.before == "@" or (s.start > 0 and written[s.start - 1 : s.start] == "@")
        ),
        None,
    )
    if own is not None:
        values[own.path] = digest
    elif "@" in written:
        if not written.endswith(digest):
            raise Unsolvable(f"{written} carries a digest no value controls")
    else:
        last = next((s for s in spans if s.end == len(written) and not s.added), None)
        if last is None:
            raise Unsolvable(f"no value ends {written}, so nothing can pin it by digest")
        values[last.path] = values.get(last.path, written[last.start : last.end]) + "@" + digest


def solve(
    composition: str,
    written: str,
    relocation: Relocation,
    fixed: dict[str, str] | None = None,
) -> dict[str, str]:
    """The values to set so that ``composition`` renders the relocated ``written`` reference.

    ``fixed`` are values already set for other images (a global registry that this chart
    prefixes to every repository). Only values that change are returned. Unsolvable when the
    name part has no value in it, when the literal text of the chart cannot frame the new name,
    or when no value can take the digest.
    """
    spans = _locate(composition, written)
    target = Reference.parse(_target_text(written, relocation))
    values = _solve_name(spans, written, f"{target.registry}/{target.repository}", fixed or {})
    _solve_digest(spans, written, str(relocation.digest), values)
    original = {s.path: written[s.start : s.end] for s in spans}
    return {path: value for path, value in values.items() if value != original.get(path)}


def _occurrences(text: str, literal: str) -> list[int]:
    found, at = [], text.find(literal)
    while at != -1:
        before = text[at - 1] if at else ""
        after = text[at + len(literal) : at + len(literal) + 1]
        if not _REF_CHARS.fullmatch(before or " ") and not _REF_CHARS.fullmatch(after or " "):
            found.append(at)
        at = text.find(literal, at + 1)
    return found


def _is_template(path: str) -> bool:
    parts = path.split("/")
    return "templates" in parts and not any(p.endswith(".tgz") for p in parts)


def rewrite_literal(files: dict[str, bytes], written: str, new: str) -> list[str] | None:
    """Replace the literal ``written`` with ``new`` in the chart's template files, in place.

    Only where it occurs in templates and nowhere else in the chart (a value file holding it would
    mean a value controls it after all); the paths changed, or None where it cannot be done.
    """
    changed: list[str] = []
    for path, data in files.items():
        try:
            text = data.decode()
        except UnicodeDecodeError:
            continue
        if not _occurrences(text, written):
            continue
        if not _is_template(path):
            return None
        changed.append(path)
    if not changed:
        return None
    for path in changed:
        text = files[path].decode()
        for at in reversed(_occurrences(text, written)):
            text = text[:at] + new + text[at + len(written) :]
        files[path] = text.encode()
    return sorted(changed)


@dataclass
class ChartRewrite:
    """What promotion changes in the chart, and what it could not relocate."""

    values: dict[str, Any]
    files: dict[str, bytes]
    values_changed: dict[str, str] = field(default_factory=dict)  # path -> new value
    literals: dict[str, list[str]] = field(default_factory=dict)  # written -> template files
    how: dict[str, list[str]] = field(default_factory=dict)  # image reference -> relocation
    problems: list[str] = field(default_factory=list)


def rewrite_chart(
    values: dict[str, Any],
    files: dict[str, bytes],
    lock: BundleLock,
    relocations: dict[str, Relocation],
    settings_doc: dict[str, Any],
) -> ChartRewrite:
    """Solve every recorded use of every image; literals where no value controls one.

    Twice: values one image sets (a global registry) may be prefixed by the chart to another
    image's repository, so the second pass solves each use with the first pass's values fixed.
    """
    decided: dict[str, str] = {}
    for _ in range(2):
        result = ChartRewrite(coalesce_values(values, settings_doc), dict(files))
        owner: dict[str, str] = {}  # value path -> image that set it
        for image in lock.images:
            relocation = relocations[image.reference]
            for use in image.uses:
                _rewrite_use(result, use, image.reference, relocation, owner, decided)
        decided = dict(result.values_changed)
    for path, value in result.values_changed.items():
        set_value(result.values, path, value)
    return result


def _rewrite_use(
    result: ChartRewrite,
    use: LockedUse,
    reference: str,
    relocation: Relocation,
    owner: dict[str, str],
    fixed: dict[str, str],
) -> None:
    target = _target_text(use.written, relocation)
    reason = "no value controls it"
    if use.composition is not None:
        try:
            wanted = solve(use.composition, use.written, relocation, fixed)
        except Unsolvable as exc:
            reason = str(exc)
        else:
            for path, value in wanted.items():
                earlier = result.values_changed.get(path)
                if earlier is not None and earlier != value:
                    result.problems.append(
                        f"{path} composes both {owner[path]} and {reference}, which promotion "
                        f"maps to different values ({earlier!r}, {value!r})"
                    )
                    return
                result.values_changed[path] = value
                owner[path] = reference
            how = f"{use.where}: values " + ", ".join(sorted(wanted)) if wanted else ""
            if how:
                result.how.setdefault(reference, []).append(how)
            return
    if use.written in result.literals:
        return
    changed = rewrite_literal(result.files, use.written, target)
    if changed is None:
        result.problems.append(
            f"{use.written} ({use.where}): {reason}, and it is not a literal of the chart's "
            "templates only"
        )
        return
    result.literals[use.written] = changed
    result.how.setdefault(reference, []).append(f"{use.where}: literal in {', '.join(changed)}")


def prove(
    rendered: str,
    relocations: Iterable[Relocation],
    registry: str,
    prefix: str,
    external: Iterable[str] = (),
) -> list[str]:
    """What is wrong with the promoted chart's render: every image it runs must be internal.

    Internal means under ``registry/prefix``, pinned by digest, and one of the ``relocations``
    (so present once the promotion has copied them). ``external`` references (allowed missing by
    the vendor's lock) are exempt.
    """
    wanted = {(r.registry, r.repository, r.digest) for r in relocations}
    exempt = set(external)
    problems: list[str] = []
    base = f"{registry}/{prefix.strip('/')}".rstrip("/") + "/"
    found = scan(rendered)
    problems += found.warnings  # a container image that is not even a valid reference
    for image in found.images:
        if image.reference in exempt:
            continue
        try:
            ref = Reference.parse(image.written)
        except ReferenceFormatError:
            problems.append(f"{image.where} runs {image.written!r}, not a valid reference")
            continue
        if not f"{ref.registry}/{ref.repository}".startswith(base):
            problems.append(f"{image.where} still runs {image.written} (not under {base})")
        elif ref.digest is None:
            problems.append(f"{image.where} runs {image.written}, not pinned by digest")
        elif (ref.registry, ref.repository, ref.digest) not in wanted:
            problems.append(f"{image.where} runs {image.written}, which the bundle does not hold")
    return sorted(set(problems))
