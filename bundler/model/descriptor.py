"""OCI content descriptors and platforms."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bundler.errors import ManifestError, UsageError
from bundler.model.digest import Digest


@dataclass(frozen=True)
class Platform:
    """An OCI platform (``linux/arm64/v8``); ``str()`` gives the ``os/arch[/variant]`` form back."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``os/arch[/variant]`` as a user writes it on the command line or in a config."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(f"invalid platform {text!r}: expected os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def from_json(cls, data: Any) -> Platform:
        """An OCI ``platform`` object; ManifestError unless os and architecture are strings."""
        if not isinstance(data, dict):
            raise ManifestError("platform must be an object")
        os_, arch = data.get("os"), data.get("architecture")
        variant = data.get("variant")
        if not isinstance(os_, str) or not isinstance(arch, str):
            raise ManifestError("platform needs string 'os' and 'architecture'")
        if variant is not None and not isinstance(variant, str):
            raise ManifestError("platform 'variant' must be a string")
        return cls(os_, arch, variant)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor; equality and hashing look at media type, digest and size only."""

    media_type: str
    digest: Digest
    size: int
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    platform: Platform | None = field(default=None, compare=False, hash=False)
    artifact_type: str | None = field(default=None, compare=False, hash=False)

    @classmethod
    def from_json(cls, data: Any) -> Descriptor:
        """A descriptor object checked field by field; any malformed field raises ManifestError."""
        if not isinstance(data, dict):
            raise ManifestError("descriptor must be an object")
        media_type, digest, size = data.get("mediaType"), data.get("digest"), data.get("size")
        if not isinstance(media_type, str) or not media_type:
            raise ManifestError("descriptor lacks a 'mediaType'")
        if not isinstance(digest, str):
            raise ManifestError("descriptor lacks a 'digest'")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"descriptor {digest} has an invalid 'size'")
        annotations = data.get("annotations") or {}
        if not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            raise ManifestError(f"descriptor {digest} has invalid 'annotations'")
        platform = data.get("platform")
        artifact_type = data.get("artifactType")
        if artifact_type is not None and not isinstance(artifact_type, str):
            raise ManifestError(f"descriptor {digest} has an invalid 'artifactType'")
        try:
            parsed_digest = Digest.parse(digest)
        except Exception as exc:
            raise ManifestError(f"descriptor digest: {exc}") from None
        return cls(
            media_type=media_type,
            digest=parsed_digest,
            size=size,
            annotations=dict(annotations),
            platform=Platform.from_json(platform) if platform is not None else None,
            artifact_type=artifact_type,
        )

    def to_json(self) -> dict[str, Any]:
        """The OCI JSON form; ``platform``, ``artifactType`` and ``annotations`` only when set."""
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.platform is not None:
            platform: dict[str, str] = {
                "architecture": self.platform.architecture,
                "os": self.platform.os,
            }
            if self.platform.variant:
                platform["variant"] = self.platform.variant
            out["platform"] = platform
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def with_annotations(self, annotations: dict[str, str]) -> Descriptor:
        """A copy of this descriptor with ``annotations`` in place of its own (not merged)."""
        return Descriptor(
            self.media_type,
            self.digest,
            self.size,
            dict(annotations),
            self.platform,
            self.artifact_type,
        )
