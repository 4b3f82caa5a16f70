"""Chart versions as Helm accepts them: Masterminds semver ``NewVersion``, which coerces.

Helm checks ``Chart.yaml``'s ``version`` with ``semver.NewVersion`` (Masterminds v3), whose
default is the loose grammar: an optional leading ``v``, the minor and patch parts optional,
leading zeros allowed in them, then an optional prerelease and build metadata. ``v1.21.1``,
``1.2``, ``1``, ``01.2.3``, ``1.2-rc1`` and ``1.2.3+x`` are versions; ``1.2.3.4`` is not.

The text of a version is kept verbatim wherever it names something (an OCI tag is the text with
``+`` turned into ``_``, as ``helm push`` does); :func:`parse_chart_version` gives the coerced
value only for comparing versions.
"""

from __future__ import annotations

import re

import semver

# Masterminds' looseSemVerRegex, anchored as Go's regexp anchors ("$" is the end of the text).
_LOOSE = re.compile(
    r"v?([0-9]+)(\.[0-9]+)?(\.[0-9]+)?"
    r"(-([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?"
    r"(\+([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?\Z",
    re.ASCII,
)
_UINT64_MAX = 2**64 - 1


def parse_chart_version(text: str) -> semver.Version:
    """The version ``text`` names, as Helm reads it; ValueError when Helm would refuse it.

    Missing minor and patch parts are 0 and leading zeros are dropped (``v1.2`` is 1.2.0).
    """
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a string")
    match = _LOOSE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a semantic version")
    numbers = [int(match.group(1))]
    numbers += [int(part[1:]) if part else 0 for part in (match.group(2), match.group(3))]
    if any(n > _UINT64_MAX for n in numbers):
        raise ValueError(f"{text!r}: a version segment is larger than 64 bits")
    pre, build = match.group(5), match.group(8)
    if pre is not None:
        # validatePrerelease: numeric identifiers have no leading zero.
        for part in pre.split("."):
            if part.isdigit() and len(part) > 1 and part[0] == "0":
                raise ValueError(f"{text!r}: prerelease segment {part!r} starts with 0")
    return semver.Version(numbers[0], numbers[1], numbers[2], pre or None, build or None)


def is_chart_version(text: object) -> bool:
    """True when Helm accepts ``text`` as a chart version."""
    if not isinstance(text, str):
        return False
    try:
        parse_chart_version(text)
    except ValueError:
        return False
    return True
