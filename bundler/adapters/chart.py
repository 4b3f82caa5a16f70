"""Helm charts read from a directory or a ``.tgz``, validated as Helm does, packed reproducibly.

A chart directory is read once into memory, packed into a ``.tgz`` whose bytes depend only on
the files' paths, contents and executable bits, and parsed from that same file set, so what
discovery looks at is exactly what a bundle ships. ``helm package`` cannot serve here: its
archives carry the current time (helm#8212).

The directory is read as Helm v4's ``loader.LoadDir`` reads it: ``.helmignore`` with Helm's
exact rules (:class:`HelmIgnore`, Go's ``filepath.Match``, the default ``templates/.?*``), an
ignored directory skipped whole, entries in byte order, a UTF-8 BOM dropped from every file,
``.git`` treated like any other directory (ignore it in ``.helmignore``, as ``helm create``
does). ``Chart.yaml`` scalars are resolved as Helm's Go YAML reader resolves them, so
``appVersion: 1.10`` is ``"1.1"`` and ``version: v1.2`` is a version (Masterminds semver).

Deliberate differences from Helm, each a refusal where Helm would read on:

* a symlink that is not ignored is refused; Helm follows it, even out of the chart directory,
  which would let a bundle carry files from anywhere on the packing machine;
* ``helm package`` re-serialises ``Chart.yaml``, expands ``charts/*.tgz`` into directories
  and writes every file 0644; here the files ship as they are, executable bits kept.

A chart archive is read in memory and never extracted. Every member is checked before its bytes
are used: one top-level directory, no absolute paths, no ``..``, only plain files and
directories, bounded sizes and counts.

PyYAML is confined to this module and ``services/discover.py``; only ``safe_load`` semantics are
used, and duplicate mapping keys are refused so that two parsers cannot read two different
charts out of one file.
"""

from __future__ import annotations

import gzip
import io
import json
import posixpath
import re
import stat
import struct
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import yaml

from bundler.adapters.archive import BoundedTarInfo
from bundler.adapters.yamlbounds import BoundedSafeLoader
from bundler.errors import ChartError, NotFoundError, UnsafeArchiveError
from bundler.model.chartversion import is_chart_version

MAX_ARCHIVE_BYTES = 20 * 1024 * 1024  # compressed
MAX_UNPACKED_BYTES = 200 * 1024 * 1024
MAX_FILES = 10_000
MAX_YAML_BYTES = 8 * 1024 * 1024  # one Chart.yaml or values.yaml
MAX_SUBCHART_DEPTH = 5

CHART_FILE = "Chart.yaml"
VALUES_FILE = "values.yaml"
HELMIGNORE_FILE = ".helmignore"

# A chart name becomes the basename of an OCI repository when the chart is published, so it must
# be one repository path component: lowercase, no '/', no '..'.
_CHART_NAME = re.compile(r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*\Z", re.ASCII)
_ALIAS = re.compile(r"[a-zA-Z0-9_-]+\Z", re.ASCII)


# ---------------------------------------------------------------------------- YAML


class _StrictLoader(BoundedSafeLoader):
    """``safe_load`` that refuses duplicate mapping keys instead of keeping the last one.

    It also refuses alias bombs and absurd nesting, see ``yamlbounds``.
    """


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "unhashable mapping key", key_node.start_mark
            ) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)

# Helm's YAML parser (Go, YAML 1.1) also reads y/Y/n/N as booleans; PyYAML does not. Agree with
# Helm, so that discovery and the config blob see the values Helm sees.
_GO_BOOLS = {"y": True, "n": False}


def _construct_bool(loader: _StrictLoader, node: yaml.ScalarNode) -> bool:
    value = str(loader.construct_scalar(node)).lower()
    return _GO_BOOLS[value] if value in _GO_BOOLS else bool(loader.bool_values[value])


_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:y|Y|n|N)$"), list("yYnN")
)
_StrictLoader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)


# Chart.yaml is read by Helm through sigs.k8s.io/yaml (a go-yaml v2 fork): a plain scalar is
# resolved by go-yaml's rules, not PyYAML's. ``1e3`` is a number there, ``1:30`` and
# ``2001-12-14`` stay text, ``0o17`` and ``1_000`` are integers, ``on`` is true.
_GO_PLAIN_TAG = "tag:bundler,2026:go-plain"
_GO_MERGE_TAG = "tag:yaml.org,2002:merge"
_GO_WORDS: dict[str, Any] = {
    **dict.fromkeys(("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE"), True),
    **dict.fromkeys(("on", "On", "ON"), True),
    **dict.fromkeys(("n", "N", "no", "No", "NO", "false", "False", "FALSE"), False),
    **dict.fromkeys(("off", "Off", "OFF"), False),
    **dict.fromkeys(("", "~", "null", "Null", "NULL"), None),
    **dict.fromkeys((".nan", ".NaN", ".NAN"), float("nan")),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), float("inf")),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), float("-inf")),
}
_GO_INT = re.compile(
    r"([-+]?)(?:0[xX]([0-9a-fA-F]+)|0[oO]([0-7]+)|0[bB]([01]+)|(0[0-7]*)|([1-9][0-9]*))\Z",
    re.ASCII,
)
_GO_YAML_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?\Z", re.ASCII)
_GO_DOT_FLOAT = re.compile(r"\.[0-9]+([eE][-+]?[0-9]+)?\Z", re.ASCII)


def _go_parse_int(text: str) -> int | None:
    """``strconv.ParseInt(text, 0, 64)``, else ``ParseUint`` (no sign): go-yaml's order."""
    match = _GO_INT.match(text)
    if match is None:
        return None
    sign, hexa, octal, binary, zero_octal, decimal = match.groups()
    if hexa is not None:
        value = int(hexa, 16)
    elif octal is not None:
        value = int(octal, 8)
    elif binary is not None:
        value = int(binary, 2)
    elif zero_octal is not None:
        value = int(zero_octal, 8)
    else:
        value = int(decimal)
    value = -value if sign == "-" else value
    if -(2**63) <= value < 2**63 or (not sign and value < 2**64):
        return value
    return None


def _go_parse_float(text: str) -> float | None:
    """``strconv.ParseFloat(text, 64)`` for the forms go-yaml hands it; out of range is None."""
    value = float(text)
    return None if value in (float("inf"), float("-inf")) else value


def _go_resolve(text: str) -> Any:
    """go-yaml v2's ``resolve`` of a plain scalar, as decoded into an ``interface{}``."""
    if text in _GO_WORDS:
        return _GO_WORDS[text]
    hint = text[:1]
    if hint == ".":
        if _GO_DOT_FLOAT.match(text):
            return _go_parse_float(text) if _go_parse_float(text) is not None else text
        return text
    if hint and hint in "+-0123456789":
        plain = text.replace("_", "")
        number = _go_parse_int(plain)
        if number is not None:
            return number
        if _GO_YAML_FLOAT.match(plain):
            value = _go_parse_float(plain)
            if value is not None:
                return value
    return text  # timestamps too: decoded into interface{} they stay text


class _ChartLoader(_StrictLoader):
    """``_StrictLoader`` resolving plain scalars as go-yaml v2 does (for ``Chart.yaml``)."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0]:
            return _GO_MERGE_TAG if value == "<<" else _GO_PLAIN_TAG
        return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]


def _construct_go_plain(loader: _ChartLoader, node: yaml.ScalarNode) -> Any:
    return _go_resolve(str(loader.construct_scalar(node)))


_ChartLoader.add_constructor(_GO_PLAIN_TAG, _construct_go_plain)


def parse_yaml(data: bytes | str, where: str, *, go_scalars: bool = False) -> Any:
    """Parse one YAML document safely.

    ``go_scalars`` resolves plain scalars as Helm's Go YAML reader does (for ``Chart.yaml``).
    Errors become a one-line ``ChartError`` naming ``where`` and the line.
    """
    loader = _ChartLoader if go_scalars else _StrictLoader
    if len(data) > MAX_YAML_BYTES:
        raise ChartError(f"{where}: larger than {MAX_YAML_BYTES} bytes")
    try:
        return yaml.load(data, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise ChartError(f"{where}: YAML error{line}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ChartError(f"{where}: YAML error: {str(exc).splitlines()[0]}") from None


# ---------------------------------------------------------------------------- model


def _go_sanitize(text: str) -> str:
    """Helm's metadata sanitising: whitespace becomes a space, unprintable runes vanish."""
    return "".join(" " if c.isspace() else c for c in text if c.isspace() or c.isprintable())


def _go_json(value: Any) -> bytes:
    """Compact JSON as Go's encoding/json writes it (HTML-safe escapes, U+2028/9 escaped)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text.encode()


def _put(out: dict[str, Any], key: str, value: Any) -> None:
    if value not in (None, "", [], {}, False):
        out[key] = value


def _go_float32(value: float) -> str:
    """``strconv.FormatFloat(value, 'g', -1, 32)``: what sigs.k8s.io/yaml makes of a float."""
    try:
        (f32,) = struct.unpack("<f", struct.pack("<f", value))
    except OverflowError:
        f32 = float("inf") if value > 0 else float("-inf")
    if f32 != f32:
        return "NaN"
    if f32 in (float("inf"), float("-inf")):
        return "+Inf" if f32 > 0 else "-Inf"
    sign = "-" if str(f32).startswith("-") else ""
    if f32 == 0:
        return f"{sign}0"
    for precision in range(1, 10):  # the shortest digits that read back as the same float32
        text = f"{abs(f32):.{precision - 1}e}"
        if struct.unpack("<f", struct.pack("<f", float(text)))[0] == abs(f32):
            break
    mantissa, _, exponent = text.partition("e")
    digits = mantissa.replace(".", "").rstrip("0") or "0"
    exp = int(exponent)
    if exp < -4 or exp >= 6:  # %e form, at least two exponent digits
        rest = f".{digits[1:]}" if len(digits) > 1 else ""
        return f"{sign}{digits[0]}{rest}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    point = exp + 1
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _go_scalar(value: Any) -> str:
    """A YAML scalar as sigs.k8s.io/yaml turns it into a Go string field, before sanitising."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float32(value)
    return str(value)


def _go_str(value: Any) -> str:
    """A YAML scalar as Helm's YAML-to-struct conversion turns it into a Go string."""
    return _go_sanitize(_go_scalar(value))


def _str_list(value: Any) -> list[str]:
    return [_go_str(v) for v in value] if isinstance(value, list) else []


@dataclass(frozen=True)
class ChartMetadata:
    """The checked fields of ``Chart.yaml``; ``raw`` keeps the whole document for the OCI config."""

    name: str
    version: str
    api_version: str
    app_version: str | None
    description: str | None
    type: str | None
    annotations: dict[str, str]
    dependencies: list[dict[str, Any]]
    raw: dict[str, Any] = field(repr=False)

    def config_json(self) -> bytes:
        """Helm's OCI config blob: ``json.Marshal(chart.Metadata)`` as Helm writes it.

        That is its struct's field order, empty fields omitted, sanitised strings, sorted
        annotations.
        """
        raw = self.raw

        def text(key: str) -> str:
            return _go_str(raw.get(key))

        out: dict[str, Any] = {}
        _put(out, "name", text("name"))
        _put(out, "home", text("home"))
        _put(out, "sources", _str_list(raw.get("sources")))
        _put(out, "version", text("version"))
        _put(out, "description", text("description"))
        _put(out, "keywords", _str_list(raw.get("keywords")))
        maintainers = []
        for m in raw.get("maintainers") or []:
            if isinstance(m, dict):
                entry: dict[str, Any] = {}
                for key in ("name", "email", "url"):
                    _put(entry, key, _go_str(m.get(key)))
                maintainers.append(entry)
        _put(out, "maintainers", maintainers)
        _put(out, "icon", text("icon"))
        _put(out, "apiVersion", text("apiVersion"))
        _put(out, "condition", text("condition"))
        _put(out, "tags", text("tags"))
        _put(out, "appVersion", text("appVersion"))
        _put(out, "deprecated", raw.get("deprecated") is True)
        _put(out, "annotations", dict(sorted(self.annotations.items())))
        _put(out, "kubeVersion", text("kubeVersion"))
        dependencies = []
        for dep in self.dependencies:
            d: dict[str, Any] = {"name": _go_str(dep.get("name"))}
            _put(d, "version", _go_str(dep.get("version")))
            d["repository"] = _go_str(dep.get("repository"))
            _put(d, "condition", _go_str(dep.get("condition")))
            _put(d, "tags", _str_list(dep.get("tags")))
            _put(d, "enabled", dep.get("enabled") is True)
            _put(d, "import-values", dep.get("import-values") or [])
            _put(d, "alias", _go_str(dep.get("alias")))
            dependencies.append(d)
        _put(out, "dependencies", dependencies)
        _put(out, "type", text("type"))
        return _go_json(out)


@dataclass
class Chart:
    """A chart read into memory: its metadata, values, files, subcharts, and the packed archive.

    ``archive`` is the reproducible ``.tgz`` of ``files``: the exact bytes a bundle ships.
    """

    metadata: ChartMetadata
    values: dict[str, Any]
    files: dict[str, bytes]
    subcharts: list[Subchart]
    archive: bytes
    origin: str

    @property
    def name(self) -> str:
        """The chart's name from ``Chart.yaml``."""
        return self.metadata.name


@dataclass
class Subchart:
    """A chart under ``charts/``, named by the key its values live under in the parent."""

    name: str  # the key its values live under in the parent: the alias, else the chart name
    chart: Chart


# ---------------------------------------------------------------------------- validation


def _optional_str(doc: dict[str, Any], key: str, where: str) -> str | None:
    """A string field of ``Chart.yaml``; numbers and booleans become text as Helm makes them."""
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, (str, bool, int, float)):
        raise ChartError(f"{where}: {key} must be a string (quote {value!r})")
    return _go_scalar(value)


# Complexity kept: Chart.yaml checked field by field, in Helm's order; one check per field.
def parse_metadata(data: bytes, origin: str) -> ChartMetadata:  # noqa: C901
    """Parse and check ``Chart.yaml`` as Helm does (apiVersion, name, SemVer version, type).

    ChartError names ``origin`` and the first field that is missing or malformed.
    """
    where = f"{CHART_FILE} of {origin}"
    doc = parse_yaml(data, where, go_scalars=True)
    if not isinstance(doc, dict):
        raise ChartError(f"{where}: not a YAML mapping")
    api_version = doc.get("apiVersion")
    if api_version not in ("v1", "v2"):
        raise ChartError(f"{where}: apiVersion {api_version!r} is not v2 (or v1)")
    name = _optional_str(doc, "name", where)
    if name is None or name == "":
        raise ChartError(f"{where}: name is required")
    if not isinstance(name, str) or not _CHART_NAME.match(name):
        raise ChartError(
            f"{where}: name {name!r} is invalid (lowercase letters, digits, '.', '_', '-'; no '/')"
        )
    version = _optional_str(doc, "version", where)
    if version is None or version == "":
        raise ChartError(f"{where}: version is required")
    if not is_chart_version(version):  # as Helm's semver.NewVersion: v1.2, 1, 01.2.3 are fine
        raise ChartError(f"{where}: version {version!r} is not semantic versioning")
    app_version = _optional_str(doc, "appVersion", where)
    description = _optional_str(doc, "description", where)
    chart_type = _optional_str(doc, "type", where)
    if chart_type not in (None, "", "application", "library"):
        raise ChartError(f"{where}: type {chart_type!r} is neither application nor library")
    annotations = doc.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, (str, bool, int, float, type(None)))
        for k, v in annotations.items()
    ):
        raise ChartError(f"{where}: annotations must map strings to strings")
    annotations = {k: _go_scalar(v) for k, v in annotations.items()}
    dependencies = doc.get("dependencies") or []
    if not isinstance(dependencies, list) or not all(isinstance(d, dict) for d in dependencies):
        raise ChartError(f"{where}: dependencies must be a list of mappings")
    for dep in dependencies:
        if not isinstance(dep.get("name"), str) or not dep["name"]:
            raise ChartError(f"{where}: a dependency has no name")
        alias = dep.get("alias")
        if alias is not None and (not isinstance(alias, str) or not _ALIAS.match(alias)):
            raise ChartError(f"{where}: dependency alias {alias!r} is invalid")
    return ChartMetadata(
        name=name,
        version=version,
        api_version=api_version,
        app_version=app_version,
        description=description,
        type=chart_type or None,
        annotations=dict(annotations),
        dependencies=[dict(d) for d in dependencies],
        raw=doc,
    )


def parse_values(data: bytes | None, origin: str) -> dict[str, Any]:
    """Parse ``values.yaml``; absent or empty is ``{}``, anything but a mapping is a ChartError."""
    if data is None:
        return {}
    doc = parse_yaml(data, f"{VALUES_FILE} of {origin}")
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ChartError(f"{VALUES_FILE} of {origin}: not a YAML mapping")
    return doc


# ---------------------------------------------------------------------------- .helmignore


class _BadPattern(ValueError):
    """Go's ``filepath.ErrBadPattern``."""


def _scan_chunk(pattern: str) -> tuple[bool, str, str]:
    """Go's ``scanChunk``: leading stars, then the chunk up to the next unbracketed star."""
    star = False
    while pattern.startswith("*"):
        pattern, star = pattern[1:], True
    in_range, i = False, 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            if i + 1 < len(pattern):
                i += 1
        elif char == "[":
            in_range = True
        elif char == "]":
            in_range = False
        elif char == "*" and not in_range:
            break
        i += 1
    return star, pattern[:i], pattern[i:]


def _get_esc(chunk: str) -> tuple[str, str]:
    """Go's ``getEsc``: one possibly escaped character of a class."""
    if not chunk or chunk[0] in "-]":
        raise _BadPattern
    if chunk[0] == "\\":
        chunk = chunk[1:]
        if not chunk:
            raise _BadPattern
    char, rest = chunk[0], chunk[1:]
    if not rest:
        raise _BadPattern
    return char, rest


# Complexity kept: a line-by-line port of Go's matchChunk, which checks the whole chunk's syntax.
def _match_chunk(chunk: str, s: str) -> str | None:  # noqa: C901
    """Go's ``matchChunk``: the rest of ``s`` after ``chunk``, None when it does not match."""
    failed = False
    while chunk:
        if not failed and not s:
            failed = True
        head = chunk[0]
        if head == "[":
            char = ""
            if not failed:
                char, s = s[0], s[1:]
            chunk = chunk[1:]
            negated = chunk.startswith("^")
            if negated:
                chunk = chunk[1:]
            matched, ranges = False, 0
            while True:
                if chunk.startswith("]") and ranges > 0:
                    chunk = chunk[1:]
                    break
                lo, chunk = _get_esc(chunk)
                hi = lo
                if chunk[0] == "-":
                    hi, chunk = _get_esc(chunk[1:])
                if lo <= char <= hi and char:
                    matched = True
                ranges += 1
            if matched == negated:
                failed = True
        elif head == "?":
            if not failed:
                if s[0] == "/":
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
        else:
            if head == "\\":
                chunk = chunk[1:]
                if not chunk:
                    raise _BadPattern
            if not failed:
                if chunk[0] != s[0]:
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
    return None if failed else s


def go_match(pattern: str, name: str) -> bool:
    r"""Go's ``path/filepath.Match`` on a Unix system; _BadPattern for a malformed pattern.

    ``*`` and ``?`` never match ``/``; ``[...]`` classes (``^`` negates); ``\\`` escapes.
    """
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and not chunk:
            return "/" not in name  # a trailing * matches the rest unless it holds a /
        rest = _match_chunk(chunk, name)
        if rest is not None and (not rest or pattern):
            name = rest
            continue
        if star:
            i, skipped = 0, False
            while i < len(name) and name[i] != "/":
                rest = _match_chunk(chunk, name[i + 1 :])
                if rest is not None:
                    if not pattern and rest:
                        i += 1
                        continue
                    name, skipped = rest, True
                    break
                i += 1
            if skipped:
                continue
        while pattern:  # no match: the rest of the pattern must still be well formed
            _, chunk, pattern = _scan_chunk(pattern)
            _match_chunk(chunk, "")
        return False
    return not name


@dataclass(frozen=True)
class _Rule:
    pattern: str
    negate: bool
    dir_only: bool
    scope: str  # "root": the whole path, "/" in it; "path": the whole path; "base": the base name

    def matches(self, path: str) -> bool:
        subject = posixpath.basename(path) if self.scope == "base" else path
        try:
            return go_match(self.pattern, subject)
        except _BadPattern:  # Helm logs "failed to compile" and counts it as no match
            return False


class HelmIgnore:
    """``.helmignore`` exactly as Helm's ``pkg/ignore`` reads and applies it.

    Each line is trimmed; blank lines and ``#`` comments are skipped; ``**`` and malformed
    patterns are refused. ``!`` negates, a trailing ``/`` means directories only, a leading
    ``/`` anchors at the root, a pattern with a ``/`` matches the whole relative path and one
    without matches the base name, all with Go's ``filepath.Match``. Rules are tried in order:
    the first plain rule that matches ignores the path. A negated rule that does *not* match
    (or a directory-only negated rule meeting a file) also ignores it, one that matches moves
    on to the next rule: Helm's own reading of ``!``, kept as is. Helm's default rule
    ``templates/.?*`` comes after the file's rules.
    """

    def __init__(self, text: str = "", where: str = HELMIGNORE_FILE) -> None:
        self.rules: list[_Rule] = []
        for number, line in enumerate(text.removeprefix("\ufeff").split("\n"), 1):
            self._parse(line.removesuffix("\r"), f"{where} line {number}")
        self._parse("templates/.?*", "Helm's default rules")

    def _parse(self, rule: str, where: str) -> None:
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            return
        if "**" in rule:
            raise ChartError(f"{where}: double-star (**) syntax is not supported")
        try:
            go_match(rule, "abc")
        except _BadPattern:
            raise ChartError(f"{where}: syntax error in pattern {rule!r}") from None
        negate = rule.startswith("!")
        if negate:
            rule = rule[1:]
        dir_only = rule.endswith("/")
        if dir_only:
            rule = rule[:-1]
        if rule.startswith("/"):
            rule, scope = rule[1:], "root"
        else:
            scope = "path" if "/" in rule else "base"
        self.rules.append(_Rule(rule, negate, dir_only, scope))

    def ignored(self, path: str, is_dir: bool) -> bool:
        """Helm's ``Rules.Ignore`` for ``path`` (relative to the chart root, ``/``-separated)."""
        if path in ("", ".", "./"):
            return False
        for rule in self.rules:
            if rule.negate:
                if (rule.dir_only and not is_dir) or not rule.matches(path):
                    return True
                continue
            if rule.dir_only and not is_dir:
                continue
            if rule.matches(path):
                return True
        return False


# ---------------------------------------------------------------------------- packing


@dataclass(frozen=True)
class _File:
    data: bytes
    executable: bool = False


def _pack(top: str, files: dict[str, _File]) -> bytes:
    """A reproducible chart archive: every file under ``top/``, sorted, fixed metadata."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(files):
            entry = files[path]
            info = tarfile.TarInfo(f"{top}/{path}")
            info.size = len(entry.data)
            info.mode = 0o755 if entry.executable else 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(entry.data))
    out = io.BytesIO()
    # GzipFile with filename "" and mtime 0 writes no name and a zero timestamp.
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=9, mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def package_files(name: str, files: dict[str, bytes]) -> bytes:
    """A reproducible chart archive of ``files`` (paths relative to the chart root)."""
    return _pack(name, {path: _File(data) for path, data in files.items()})


def dump_values(values: dict[str, Any]) -> bytes:
    """values.yaml text for ``values``: block style, keys in their order."""
    text = yaml.safe_dump(values, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return text.encode()


_UTF8_BOM = b"\xef\xbb\xbf"


# Complexity kept: one walk of the directory; each refusal (link, special file, size) a branch.
def _read_dir(root: Path) -> dict[str, _File]:  # noqa: C901
    """The chart directory's files after ``.helmignore``; symlinks and special files refused."""
    origin = f"chart dir {root}"
    ignore_path = root / HELMIGNORE_FILE
    rules = HelmIgnore()
    if ignore_path.is_file() and not ignore_path.is_symlink():
        text = ignore_path.read_text(errors="replace")
        rules = HelmIgnore(text, f"{HELMIGNORE_FILE} of {origin}")
    files: dict[str, _File] = {}
    total = 0

    def walk(directory: Path, rel: str) -> None:
        nonlocal total
        try:
            entries = sorted(directory.iterdir(), key=lambda p: p.name)
        except OSError as exc:
            raise ChartError(f"{origin}: cannot read {directory}: {exc.strerror}") from None
        for entry in entries:
            path = f"{rel}{entry.name}"
            st = entry.lstat()
            if stat.S_ISDIR(st.st_mode):
                if rules.ignored(path, True):  # the whole directory, as Helm skips it
                    continue
                walk(entry, f"{path}/")
                continue
            # Helm follows a link before asking the rules: a link to a directory is a directory.
            if rules.ignored(path, stat.S_ISLNK(st.st_mode) and entry.is_dir()):
                continue
            if stat.S_ISLNK(st.st_mode):
                raise ChartError(f"{origin}: {path} is a symlink; charts must hold plain files")
            if not stat.S_ISREG(st.st_mode):
                raise ChartError(f"{origin}: {path} is not a regular file")
            if len(files) >= MAX_FILES:
                raise ChartError(f"{origin}: more than {MAX_FILES} files")
            total += st.st_size
            if total > MAX_UNPACKED_BYTES:
                raise ChartError(f"{origin}: more than {MAX_UNPACKED_BYTES} bytes of files")
            data = entry.read_bytes().removeprefix(_UTF8_BOM)  # Helm drops a file's BOM
            files[path] = _File(data, bool(st.st_mode & 0o111))

    if not root.is_dir():
        raise ChartError(f"{origin}: not a directory")
    walk(root, "")
    return files


def package_chart_dir(path: Path) -> bytes:
    """Pack a chart directory into a ``.tgz`` Helm reads; same files in, same bytes out."""
    files = _read_dir(path)
    chart_yaml = files.get(CHART_FILE)
    if chart_yaml is None:
        raise ChartError(f"chart dir {path}: {CHART_FILE} is missing")
    metadata = parse_metadata(chart_yaml.data, f"chart dir {path}")
    return _pack(metadata.name, files)


# ---------------------------------------------------------------------------- archives


def _member_path(info: tarfile.TarInfo, origin: str) -> str:
    name = info.name
    if name.startswith("/") or "\\" in name or "\x00" in name or re.match(r"[A-Za-z]:", name):
        raise UnsafeArchiveError(f"{origin}: member {name!r} has an absolute or odd path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{origin}: member {name!r} escapes the chart directory")
    if info.issym() or info.islnk():
        raise UnsafeArchiveError(f"{origin}: member {name!r} is a link")
    if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE):
        raise UnsafeArchiveError(f"{origin}: member {name!r} is a device or special file")
    if not parts:
        raise UnsafeArchiveError(f"{origin}: member {name!r} has an empty path")
    return "/".join(parts)


class _CappedReader:
    """Decompressed bytes, at most ``limit`` of them: past it, UnsafeArchiveError.

    Bounds what a highly compressed archive can make us inflate, whatever its headers claim.
    """

    def __init__(self, raw: gzip.GzipFile, limit: int, origin: str) -> None:
        self.raw, self.limit, self.origin, self.count = raw, limit, origin, 0

    def read(self, size: int = -1) -> bytes:
        want = self.limit + 1 - self.count
        data = self.raw.read(want if size is None or size < 0 else min(size, want))
        self.count += len(data)
        if self.count > self.limit:
            raise UnsafeArchiveError(f"{self.origin}: more than {self.limit} bytes uncompressed")
        return data


# Complexity kept: every member check of one archive pass, next to the bytes it guards.
def _read_archive(data: bytes, origin: str) -> dict[str, _File]:  # noqa: C901
    """The files of a chart archive below its single top-level directory, checked, in memory."""
    if len(data) > MAX_ARCHIVE_BYTES:
        raise UnsafeArchiveError(f"{origin}: larger than {MAX_ARCHIVE_BYTES} bytes compressed")
    if data[:2] != b"\x1f\x8b":
        raise ChartError(f"{origin}: not a gzip-compressed chart archive")
    files: dict[str, _File] = {}
    top: str | None = None
    total = 0
    count = 0
    try:
        # gzip decompresses, tarfile only reads: tarfile's own "r|gz" mishandles the gzip
        # extra field that `helm package` writes (CPython gh-107398, fixed after 3.11).
        # Headers and padding take at most 3 blocks a file beyond the files' own bytes (more
        # only with extended headers, bounded by BoundedTarInfo): inflate no further than that.
        with (
            gzip.GzipFile(fileobj=io.BytesIO(data)) as gz,
            tarfile.open(
                fileobj=cast(
                    IO[bytes],
                    _CappedReader(gz, MAX_UNPACKED_BYTES + 3 * 512 * MAX_FILES + 10240, origin),
                ),
                mode="r|",
                tarinfo=BoundedTarInfo,
            ) as tar,
        ):
            for info in tar:
                count += 1
                if count > MAX_FILES:
                    raise UnsafeArchiveError(f"{origin}: more than {MAX_FILES} members")
                path = _member_path(info, origin)
                first, _, rest = path.partition("/")
                if top is None:
                    top = first
                elif first != top:
                    raise UnsafeArchiveError(
                        f"{origin}: member {info.name!r} is outside the top-level directory {top!r}"
                    )
                if info.isdir():
                    continue
                if not rest:
                    raise UnsafeArchiveError(
                        f"{origin}: member {info.name!r} is not inside a chart directory"
                    )
                total += info.size
                if total > MAX_UNPACKED_BYTES:
                    raise UnsafeArchiveError(
                        f"{origin}: more than {MAX_UNPACKED_BYTES} bytes uncompressed"
                    )
                if rest in files:
                    raise UnsafeArchiveError(f"{origin}: member {info.name!r} appears twice")
                handle = tar.extractfile(info)
                assert handle is not None  # a regular file
                files[rest] = _File(handle.read(), bool(info.mode & 0o111))
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ChartError(f"{origin}: damaged chart archive: {exc}") from None
    except RecursionError:  # a chain of extended headers, each naming the next
        raise UnsafeArchiveError(f"{origin}: chains too many extended headers") from None
    if top is None:
        raise ChartError(f"{origin}: empty chart archive")
    return files


# ---------------------------------------------------------------------------- loading


def _subfiles(files: dict[str, _File], prefix: str) -> dict[str, _File]:
    return {p[len(prefix) :]: f for p, f in files.items() if p.startswith(prefix)}


# Complexity kept: Chart.yaml, values, then each subchart and its aliases, in Helm's order.
def _build(files: dict[str, _File], origin: str, archive: bytes | None, depth: int) -> Chart:  # noqa: C901
    if depth > MAX_SUBCHART_DEPTH:
        raise ChartError(f"{origin}: subcharts nested deeper than {MAX_SUBCHART_DEPTH}")
    chart_yaml = files.get(CHART_FILE)
    if chart_yaml is None:
        raise ChartError(f"{origin}: {CHART_FILE} is missing")
    metadata = parse_metadata(chart_yaml.data, origin)
    values_file = files.get(VALUES_FILE)
    values = parse_values(values_file.data if values_file else None, origin)
    if archive is None:
        archive = _pack(metadata.name, files)

    loaded: list[Chart] = []
    names = sorted({p.split("/", 2)[1] for p in files if p.startswith("charts/")})
    for entry in names:
        if entry[:1] in ("_", "."):  # Helm skips these too
            continue
        if entry.endswith(".prov"):  # Helm keeps provenance files as plain files of the chart
            continue
        if f"charts/{entry}" in files and entry.endswith(".tgz"):
            loaded.append(
                _load_archive(
                    files[f"charts/{entry}"].data, f"subchart {entry} of {origin}", depth + 1
                )
            )
            continue
        if f"charts/{entry}" in files or entry.endswith(".tgz"):  # Helm cannot load these
            raise ChartError(
                f"{origin}: charts/{entry} is neither a chart directory nor a chart .tgz file"
            )
        sub_origin = f"subchart charts/{entry} of {origin}"
        loaded.append(_build(_subfiles(files, f"charts/{entry}/"), sub_origin, None, depth + 1))

    subcharts: list[Subchart] = []
    for sub in loaded:
        aliases = [
            d["alias"]
            for d in metadata.dependencies
            if d.get("name") == sub.metadata.name and d.get("alias")
        ]
        plain = not aliases or any(
            d.get("name") == sub.metadata.name and not d.get("alias") for d in metadata.dependencies
        )
        for alias in aliases:
            subcharts.append(Subchart(alias, sub))
        if plain:
            subcharts.append(Subchart(sub.metadata.name, sub))
    return Chart(
        metadata=metadata,
        values=values,
        files={p: f.data for p, f in files.items()},
        subcharts=subcharts,
        archive=archive,
        origin=origin,
    )


def _load_archive(data: bytes, origin: str, depth: int) -> Chart:
    return _build(_read_archive(data, origin), origin, data, depth)


def load_chart_dir(path: Path) -> Chart:
    """Load a chart directory; its ``archive`` is the reproducible ``.tgz`` of the same files."""
    return _build(_read_dir(path), f"chart dir {path}", None, 0)


def load_chart_archive(data: bytes, origin: str) -> Chart:
    """Load a chart ``.tgz`` from memory; its ``archive`` is ``data`` itself."""
    return _load_archive(data, origin, 0)


def load_chart(path: Path) -> Chart:
    """A chart directory or a chart ``.tgz`` file."""
    if path.is_dir():
        return load_chart_dir(path)
    try:
        size = path.stat().st_size
        if size > MAX_ARCHIVE_BYTES:
            raise UnsafeArchiveError(
                f"chart archive {path}: larger than {MAX_ARCHIVE_BYTES} bytes compressed"
            )
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"chart {path} does not exist") from None
    except OSError as exc:
        raise ChartError(f"cannot read chart {path}: {exc.strerror}") from None
    return load_chart_archive(data, f"chart archive {path}")
