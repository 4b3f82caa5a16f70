"""What a copy will move, decided before a byte of blob content moves."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bundler.model.descriptor import Descriptor
from bundler.model.digest import Digest
from bundler.model.manifest import Manifest


@dataclass(frozen=True)
class TagAssignment:
    """Point ``tag`` at ``descriptor`` once everything under it is in place."""

    tag: str
    descriptor: Descriptor
    # Written with the name where the target keeps annotations (an archive's index.json entry).
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass
class TransferPlan:
    """The full graph of one copy.

    ``manifests`` is ordered children first, so writing them in order never makes a registry
    see a manifest whose children are missing. ``referrers`` maps each subject digest to the
    manifests that refer to it (signatures, attestations) so targets without a referrers API
    can maintain the fallback tag.
    """

    root: Descriptor
    manifests: list[Manifest] = field(default_factory=list)
    blobs: dict[Digest, Descriptor] = field(default_factory=dict)
    tags: list[TagAssignment] = field(default_factory=list)
    referrers: dict[Digest, list[Manifest]] = field(default_factory=dict)

    @property
    def blob_bytes(self) -> int:
        """Total size in bytes of the distinct blobs to move."""
        return sum(d.size for d in self.blobs.values())

    @property
    def manifest_bytes(self) -> int:
        """Total size in bytes of the manifests to write."""
        return sum(m.size for m in self.manifests)

    def has_manifest(self, digest: Digest) -> bool:
        """True when the plan already holds the manifest of ``digest``."""
        return any(m.digest == digest for m in self.manifests)
