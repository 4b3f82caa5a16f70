"""Where promoted images go, and how the chart's values are rewritten to point there.

Pure functions: the mapping from an upstream reference to a repository under the internal
prefix, and the new value at each value path the lock recorded.

Mapping styles (``--layout``):

- ``nested`` (default): ``PREFIX/<upstream repository>``, e.g. ``example.local/demo/web`` ->
  ``PREFIX/demo/web``;
- ``flat``: ``PREFIX/<last path component>``, for registries that allow one level below a
  project (a Harbor project is the first level of PREFIX): ``PREFIX/web``;
- ``host``: ``PREFIX/<upstream host>/<upstream repository>``, which keeps images of different
  registries apart and is what containerd mirror configuration needs (``:port`` becomes ``-port``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from bundler.errors import ConfigError, UsageError
from bundler.model.bundle import ValuePath
from bundler.model.digest import Digest
from bundler.model.reference import Reference

STYLES = ("nested", "flat", "host")


@dataclass(frozen=True)
class Relocation:
    """Where one image of the lock goes on promotion: registry, repository, tag and digest."""

    source: str  # the reference as the chart and the lock name it
    registry: str
    repository: str
    tag: str | None
    digest: Digest

    @property
    def pinned(self) -> str:
        """``registry/repository[:tag]@digest``: what the promoted chart runs."""
        tag = f":{self.tag}" if self.tag else ""
        return f"{self.registry}/{self.repository}{tag}@{self.digest}"

    @property
    def tagged(self) -> Reference:
        """The target reference with the tag only, for tagging after the push."""
        return Reference(self.registry, self.repository, self.tag, None)


def relocate(source: str, digest: Digest, registry: str, prefix: str, style: str) -> Relocation:
    """Map ``source`` under ``registry/prefix`` in ``style`` (one of :data:`STYLES`).

    UsageError for an unknown style or when the result is not a valid repository name.
    """
    if style not in STYLES:
        raise UsageError(f"relocation layout {style!r}: one of {', '.join(STYLES)}")
    ref = Reference.parse(source)
    if style == "nested":
        path = ref.repository
    elif style == "flat":
        path = ref.repository.rsplit("/", 1)[-1]
    else:
        path = f"{ref.registry.replace(':', '-').lower()}/{ref.repository}"
    repository = f"{prefix.strip('/')}/{path}" if prefix.strip("/") else path
    try:  # the result must be a repository name every registry accepts
        Reference.parse(f"{registry}/{repository}:x")
    except Exception as exc:
        raise UsageError(
            f"{source} cannot be relocated to {registry}/{repository}: {exc}"
        ) from None
    return Relocation(source, registry, repository, ref.tag, digest)


def get_path(values: dict[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` in ``values``; ConfigError if any part is missing."""
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"value path {path!r} does not exist in the chart's values")
        node = node[part]
    return node


def set_value(values: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted ``path`` in ``values`` in place, making the maps on the way."""
    node = values
    parts = path.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def set_path(values: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``values`` with ``value`` at ``path`` (intermediate maps created)."""
    out = copy.deepcopy(values)
    set_value(out, path, value)
    return out


def new_value(current: Any, value_path: ValuePath, relocation: Relocation) -> Any:
    """What to put at a value path so the chart runs the relocated, digest-pinned image."""
    if value_path.form == "string" or not isinstance(current, dict):
        return relocation.pinned
    new = dict(current)
    name_key = next((k for k in ("repository", "name", "image") if k in current), "repository")
    if "registry" in current:
        new["registry"] = relocation.registry
        new[name_key] = relocation.repository
    else:
        new[name_key] = f"{relocation.registry}/{relocation.repository}"
    if "digest" in current:
        new["digest"] = str(relocation.digest)
        new["tag"] = relocation.tag or current.get("tag", "")
    else:
        # Templates render "{{ repository }}:{{ tag }}": a tag of "1.0@sha256:..." pins it.
        new["tag"] = (
            f"{relocation.tag}@{relocation.digest}"
            if relocation.tag
            else (f"latest@{relocation.digest}")
        )
    return new


def coalesce_values(defaults: Any, overrides: Any) -> Any:
    """Helm's coalescing of values over a chart's values; the inputs are not changed.

    Maps merge key by key, a ``null`` override removes the key, anything else in ``overrides``
    replaces; no overrides at all (``None``) leaves the defaults.
    """
    if overrides is None:
        return copy.deepcopy(defaults)
    if isinstance(defaults, dict) and isinstance(overrides, dict):
        out = dict(defaults)
        for key, value in overrides.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = coalesce_values(defaults.get(key), value)
        return out
    return copy.deepcopy(overrides)
