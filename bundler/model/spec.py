"""What the user asked ``bundler pack`` for: a bundle config file and command-line flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ImageSourceSpec:
    """One place images are looked up: an OCI layout, a docker save tar, or a mirror."""

    kind: str  # "oci", "docker-archive", "mirror"
    path: Path | None = None
    mirror_from: str | None = None
    mirror_to: str | None = None

    def __str__(self) -> str:
        if self.kind == "mirror":
            return f"mirror {self.mirror_from}={self.mirror_to}"
        return f"{self.kind}:{self.path}"


@dataclass(frozen=True)
class ExtraImage:
    """An image named in the bundle config beyond those the chart shows, with its value paths."""

    ref: str
    value_paths: tuple[str, ...] = ()


@dataclass
class BundleSpec:
    """The bundle config file and flags merged; name and version default to the chart's."""

    name: str | None = None
    version: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    chart_path: Path | None = None
    chart_ref: str | None = None
    values_files: list[Path] = field(default_factory=list)
    images: list[ExtraImage] = field(default_factory=list)
    value_paths: list[str] = field(default_factory=list)
    platforms: list[str] = field(default_factory=list)
    sources: list[ImageSourceSpec] = field(default_factory=list)
    upstream: bool = True
    allow_missing: list[str] = field(default_factory=list)
    set_values: list[str] = field(default_factory=list)  # --set, as Helm parses them
    set_strings: list[str] = field(default_factory=list)  # --set-string
    set_files: list[str] = field(default_factory=list)  # --set-file
    kube_version: str | None = None  # --kube-version for rendering
    api_versions: list[str] = field(default_factory=list)  # --api-versions for rendering
    include_disabled: bool = False  # also bundle images of components the render leaves off
    skip_tests: bool = False  # render without templates/tests (Helm's --skip-tests)
    allow_missing_platforms: bool = False  # keep images that lack a --platform asked for
