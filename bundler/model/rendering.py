"""How a chart was rendered: the values, the cluster version and the API versions given to Helm.

Recorded in the bundle lock (signed with it), so that promotion renders the chart exactly as
pack checked it, and a reader of the lock knows which values the completeness check holds for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RenderSettings:
    """What a render depends on besides the chart: values, cluster version, API versions.

    ``values`` is the user's values document (files and ``--set`` already merged by Helm); it and
    the rest are recorded in the bundle lock, so promotion renders the chart exactly as pack did.
    """

    values: dict[str, Any]
    kube_version: str | None = None
    api_versions: tuple[str, ...] = ()
    release: str = "bundle"
    namespace: str = "default"
    skip_tests: bool = False  # Helm's --skip-tests: templates/tests are neither run nor bundled

    def to_json(self) -> dict[str, Any]:
        """The lock's ``rendering`` object."""
        return {
            "values": self.values,
            "kubeVersion": self.kube_version,
            "apiVersions": list(self.api_versions),
            "release": self.release,
            "namespace": self.namespace,
            "skipTests": self.skip_tests,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RenderSettings:
        """The inverse of ``to_json``."""
        values = doc.get("values") or {}
        if not isinstance(values, dict):
            raise TypeError("rendering.values")
        return cls(
            values=values,
            kube_version=doc.get("kubeVersion"),
            api_versions=tuple(doc.get("apiVersions") or ()),
            release=doc.get("release") or "bundle",
            namespace=doc.get("namespace") or "default",
            skip_tests=bool(doc.get("skipTests", False)),
        )
