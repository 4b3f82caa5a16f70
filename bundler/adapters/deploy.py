"""Deployment descriptors for a promoted bundle: Argo CD resources and containerd mirrors.

A promoted chart is an ordinary Helm OCI chart in the internal registry (repository basename =
chart name, tag = version with ``+`` mapped to ``_``). This module writes what a platform team
applies next, as bytes, without touching the network or the disk:

- an Argo CD ``Application`` with a Helm-type source pointing at the chart. Argo CD's Helm OCI
  convention wants ``repoURL`` as ``host/path`` *without* ``oci://``, ``chart`` as the chart name
  and ``targetRevision`` as the chart version as written (with ``+``; Argo CD and Helm map it to
  the tag). Argo CD checks no signatures on Helm OCI sources and cannot pin such a chart by digest,
  so the digest rides along as an annotation for people and audits, not as the pin;
- an Argo CD repository ``Secret`` template (``type: helm``, ``enableOCI: "true"``) whose password
  is a stand-in value. No secret is ever written by this module;
- containerd registry host configuration (``hosts.toml`` files below the ``config_path``
  directory, usually ``/etc/containerd/certs.d``) for the mode that leaves the chart untouched
  and redirects pulls of the upstream registries to mirrors in the internal registry.

Every input is validated before anything is written; a bad one raises :class:`UsageError`
(or its subclass :class:`ReferenceFormatError`). Output is deterministic: the same inputs give
the same bytes. PyYAML is used here for writing only (and, for the Helm values, through
:func:`bundler.adapters.chart.parse_yaml`).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml

from bundler.adapters.chart import parse_yaml
from bundler.errors import ChartError, ReferenceFormatError, UsageError
from bundler.model.chartversion import is_chart_version
from bundler.model.digest import Digest
from bundler.model.reference import DEFAULT_DOMAIN, NAME_TOTAL_LENGTH_MAX, Reference, is_valid_tag

APPLICATION_API_VERSION = "argoproj.io/v1alpha1"
DEFAULT_ARGOCD_NAMESPACE = "argocd"
DEFAULT_DESTINATION_SERVER = "https://kubernetes.default.svc"
DEFAULT_PROJECT = "default"

# Kubernetes annotation (domain-qualified, the Kubernetes spelling of the project's OCI
# annotation prefix ``dev.bundler``) carrying the promoted chart manifest digest.
ANNOTATION_CHART_DIGEST = "bundler.dev/chart-digest"

SECRET_TYPE_LABEL = "argocd.argoproj.io/secret-type"  # noqa: S105 - a label, no secret
SECRET_TYPE_REPOSITORY = "repository"  # noqa: S105 - a label value
# Placeholders are deliberately not valid credentials: angle brackets and spaces make them
# impossible to mistake for a real value and easy to find with grep.
PASSWORD_STAND_IN = "<set me: registry password or token>"  # noqa: S105 - a stand-in, not a secret
USERNAME_STAND_IN = "<set me: registry username>"

HOSTS_FILE = "hosts.toml"

_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z", re.ASCII)
_DNS_SUBDOMAIN = re.compile(
    r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\Z", re.ASCII
)
_DNS_SUBDOMAIN_MAX = 253
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# ---------------------------------------------------------------------------- validation


def _check_registry_host(host: str, what: str) -> None:
    """``host[:port]`` as it appears at the front of an image reference.

    The reference grammar decides: a host that Docker's rule would read as a repository path
    (no '.', no ':', not ``localhost``) or that it rewrites (``index.docker.io``) is refused,
    because the same string in an image reference would not name that registry.
    """
    if not isinstance(host, str) or not host:
        raise UsageError(f"{what}: empty registry host")
    if "/" in host or host != host.strip():
        raise UsageError(f"{what}: {host!r} is not a registry host[:port]")
    try:
        parsed = Reference.parse(f"{host}/x", default_tag=False)
    except ReferenceFormatError:
        raise UsageError(f"{what}: {host!r} is not a valid registry host[:port]") from None
    if parsed.registry != host:
        hint = f" (write {DEFAULT_DOMAIN!r})" if parsed.registry == DEFAULT_DOMAIN else ""
        raise UsageError(
            f"{what}: {host!r} does not name a registry in image references{hint}; "
            "a registry host contains a '.' or a ':port', or is 'localhost'"
        )


def _check_repository_path(path: str, what: str) -> None:
    try:
        parsed = Reference.parse(f"localhost/{path}", default_tag=False)
    except ReferenceFormatError:
        parsed = None
    if parsed is None or parsed.repository != path:
        raise UsageError(
            f"{what}: {path!r} is not a repository path (lowercase components of [a-z0-9] "
            "joined by '.', '_', '__' or '-', separated by '/')"
        )


def _check_dns_label(value: str, what: str) -> None:
    if not isinstance(value, str) or not _DNS_LABEL.match(value):
        raise UsageError(
            f"{what}: {value!r} is not a DNS-1123 label (lowercase alphanumerics and '-', "
            "starting and ending with an alphanumeric, at most 63 characters)"
        )


def _check_dns_subdomain(value: str, what: str) -> None:
    if (
        not isinstance(value, str)
        or len(value) > _DNS_SUBDOMAIN_MAX
        or not _DNS_SUBDOMAIN.match(value)
    ):
        raise UsageError(
            f"{what}: {value!r} is not a DNS-1123 subdomain (lowercase alphanumerics, '-' and "
            f"'.', starting and ending with an alphanumeric, at most {_DNS_SUBDOMAIN_MAX} "
            "characters)"
        )


def _check_server_url(url: str) -> None:
    if not isinstance(url, str) or _CONTROL.search(url) or " " in url:
        raise UsageError(f"destination server {url!r} is not a URL")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise UsageError(
            f"destination server {url!r} must be an http(s) URL of a Kubernetes API server, "
            f"e.g. {DEFAULT_DESTINATION_SERVER!r}"
        )


# ---------------------------------------------------------------------------- the chart


@dataclass(frozen=True)
class ChartLocation:
    """Where a promoted chart lives in the internal registry.

    ``registry`` is ``host[:port]``; ``repository`` the path under it *without* the chart name
    (may be empty); ``chart`` the chart name, which is the repository basename; ``version`` the
    chart's SemVer version (the OCI tag is the version with ``+`` mapped to ``_``); ``digest``
    the promoted chart manifest digest, when known. Construction validates every field and
    raises :class:`UsageError` for a bad one.
    """

    registry: str
    repository: str
    chart: str
    version: str
    digest: str | None = None

    def __post_init__(self) -> None:
        _check_registry_host(self.registry, "chart registry")
        if not isinstance(self.repository, str):
            raise UsageError("chart repository must be a string")
        if self.repository:
            _check_repository_path(self.repository, "chart repository")
        if not isinstance(self.chart, str) or not self.chart or "/" in self.chart:
            raise UsageError(f"chart name {self.chart!r} must be one repository path component")
        _check_repository_path(self.chart, "chart name")
        if len(self.oci_name) > NAME_TOTAL_LENGTH_MAX:
            raise UsageError(
                f"chart repository {self.oci_name!r} is longer than {NAME_TOTAL_LENGTH_MAX}"
            )
        if not isinstance(self.version, str) or not is_chart_version(self.version):
            raise UsageError(
                f"chart version {self.version!r} is not a chart version (SemVer, as Helm reads it)"
            )
        if not is_valid_tag(self.tag):
            raise UsageError(
                f"chart version {self.version!r} does not make a valid OCI tag ({self.tag!r})"
            )
        if self.digest is not None:
            if not isinstance(self.digest, str):
                raise UsageError("chart digest must be a string")
            Digest.parse(self.digest)  # ReferenceFormatError is a UsageError

    @property
    def url(self) -> str:
        """``registry/repository`` without ``oci://``: Argo CD's Helm OCI ``repoURL``."""
        return f"{self.registry}/{self.repository}" if self.repository else self.registry

    @property
    def oci_name(self) -> str:
        """The chart's OCI repository, ``registry/repository/chart``."""
        return f"{self.url}/{self.chart}"

    @property
    def tag(self) -> str:
        """The OCI tag Helm uses for this version (``+`` becomes ``_``)."""
        return self.version.replace("+", "_")

    @property
    def reference(self) -> str:
        """``registry/repository/chart:tag[@digest]``; prefix ``oci://`` for ``helm pull``."""
        out = f"{self.oci_name}:{self.tag}"
        return f"{out}@{self.digest}" if self.digest else out


# ---------------------------------------------------------------------------- YAML output


class _Dumper(yaml.SafeDumper):
    """Safe dumper writing multi-line strings as literal blocks, so values stay readable."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    # PyYAML falls back to a quoted style by itself where a literal block cannot hold the text.
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)


def _dump(document: dict[str, Any]) -> bytes:
    text = yaml.dump(
        document,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=4096,
    )
    return text.encode("utf-8")


# ---------------------------------------------------------------------------- Argo CD


def argocd_application(
    location: ChartLocation,
    *,
    name: str,
    namespace: str = DEFAULT_ARGOCD_NAMESPACE,
    destination_namespace: str,
    destination_server: str = DEFAULT_DESTINATION_SERVER,
    project: str = DEFAULT_PROJECT,
    values: str | None = None,
    sync_policy: str = "manual",
    track: str | None = None,
) -> bytes:
    """YAML of an Argo CD ``Application`` deploying the promoted chart.

    ``values`` is Helm values YAML (a mapping) passed as ``spec.source.helm.values``.
    ``sync_policy`` ``auto`` syncs on its own (pruning, self-healing); ``manual`` waits for a
    sync. ``track`` is a SemVer range (``1.x``, ``>=1.2 <2``) Argo CD follows instead of the
    exact promoted version.
    """
    if not isinstance(location, ChartLocation):
        raise UsageError("location must be a ChartLocation")
    _check_dns_subdomain(name, "application name")
    _check_dns_label(namespace, "application namespace")
    _check_dns_label(destination_namespace, "destination namespace")
    _check_server_url(destination_server)
    _check_dns_subdomain(project, "project")
    if sync_policy not in ("auto", "manual"):
        raise UsageError(f"sync policy {sync_policy!r}: auto or manual")
    if track is not None and (not track.strip() or any(c in track for c in "\n\r\x00")):
        raise UsageError(f"track {track!r} is not a version range")

    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if location.digest is not None:
        metadata["annotations"] = {ANNOTATION_CHART_DIGEST: location.digest}
    source: dict[str, Any] = {
        "repoURL": location.url,
        "chart": location.chart,
        "targetRevision": track.strip() if track is not None else location.version,
    }
    if values is not None:
        source["helm"] = {"values": _checked_values(values)}
    document: dict[str, Any] = {
        "apiVersion": APPLICATION_API_VERSION,
        "kind": "Application",
        "metadata": metadata,
        "spec": {
            "project": project,
            "source": source,
            "destination": {"server": destination_server, "namespace": destination_namespace},
        },
    }
    if sync_policy == "auto":
        document["spec"]["syncPolicy"] = {"automated": {"prune": True, "selfHeal": True}}
    return _dump(document)


def argocd_tls_certs(
    location: ChartLocation, ca_pem: bytes, *, namespace: str = DEFAULT_ARGOCD_NAMESPACE
) -> bytes:
    """The ``argocd-tls-certs-cm`` ConfigMap trusting ``ca_pem`` for the chart's registry.

    Argo CD looks the CA of a repository up by its server name (the host, without the port).
    """
    _check_dns_label(namespace, "Argo CD namespace")
    text = ca_pem.decode("ascii", errors="strict") if isinstance(ca_pem, bytes) else ""
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise UsageError("the CA file holds no PEM certificate")
    host = location.registry.rsplit(":", 1)[0] if ":" in location.registry else location.registry
    document: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "argocd-tls-certs-cm",
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "argocd-tls-certs-cm",
                "app.kubernetes.io/part-of": "argocd",
            },
        },
        "data": {host: text},
    }
    return _dump(document)


def _checked_values(values: str) -> str:
    if not isinstance(values, str):
        raise UsageError("Helm values must be YAML text")
    try:
        parsed = parse_yaml(values, "Helm values")
    except ChartError as exc:
        raise UsageError(str(exc)) from None
    if parsed is not None and not isinstance(parsed, dict):
        raise UsageError(f"Helm values must be a YAML mapping, not {type(parsed).__name__}")
    return values


def argocd_repository_secret(
    location: ChartLocation,
    *,
    name: str,
    namespace: str = DEFAULT_ARGOCD_NAMESPACE,
    username: str | None = None,
) -> bytes:
    """YAML of an Argo CD repository ``Secret`` for the chart's registry, password left blank.

    The document carries :data:`PASSWORD_STAND_IN` (and :data:`USERNAME_STAND_IN` when no
    ``username`` is given) and a leading comment saying how to create the real Secret.
    """
    if not isinstance(location, ChartLocation):
        raise UsageError("location must be a ChartLocation")
    _check_dns_subdomain(name, "secret name")
    _check_dns_label(namespace, "secret namespace")
    if username is not None and (
        not isinstance(username, str)
        or not username
        or ":" in username
        or _CONTROL.search(username)
    ):
        raise UsageError("registry username must be non-empty, without ':' or control characters")

    url = location.url
    string_data: dict[str, str] = {
        "type": "helm",
        "name": name,
        "url": url,
        "enableOCI": "true",
        "username": username if username is not None else USERNAME_STAND_IN,
        "password": PASSWORD_STAND_IN,
    }
    document: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {SECRET_TYPE_LABEL: SECRET_TYPE_REPOSITORY},
        },
        "type": "Opaque",
        "stringData": string_data,
    }
    user = shlex.quote(username) if username is not None else "REGISTRY_USER"
    ns, secret = shlex.quote(namespace), shlex.quote(name)
    header = "\n".join(
        [
            f"# Argo CD repository credentials for the Helm OCI charts under {url}",
            "# (Helm-type source, repoURL without oci://).",
            "#",
            "# TEMPLATE: the password below is a stand-in value and this file holds no secret.",
            "# Do not write the real password into it. Create the Secret from the password on",
            "# standard input instead, and apply it directly or seal it:",
            "#",
            '#   printf %s "$REGISTRY_PASSWORD" |',
            f"#   kubectl -n {ns} create secret generic {secret} \\",
            f"#     --from-literal=type=helm --from-literal=name={secret} \\",
            f"#     --from-literal=url={shlex.quote(url)} --from-literal=enableOCI=true \\",
            f"#     --from-literal=username={user} --from-file=password=/dev/stdin \\",
            "#     --dry-run=client -o yaml |",
            f"#   kubectl label --local -f - {SECRET_TYPE_LABEL}={SECRET_TYPE_REPOSITORY} "
            "-o yaml |",
            "#   kubectl apply -f -        # or: kubeseal --format yaml > sealed-secret.yaml",
            "#",
            "# For an anonymous registry, drop the username and password entries.",
            "",
        ]
    )
    return header.encode("utf-8") + _dump(document)


# ---------------------------------------------------------------------------- containerd


# Complexity kept: one escape table of TOML 1.0 basic strings, one branch per escape.
def toml_string(value: str) -> str:  # noqa: C901
    """``value`` as a TOML basic string (quoted, with TOML 1.0 escapes)."""
    out = ['"']
    for char in value:
        code = ord(char)
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char == "\b":
            out.append("\\b")
        elif char == "\t":
            out.append("\\t")
        elif char == "\n":
            out.append("\\n")
        elif char == "\f":
            out.append("\\f")
        elif char == "\r":
            out.append("\\r")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:
            raise UsageError(f"{value!r} contains a lone surrogate, which TOML cannot hold")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _mirror_url(upstream: str, mirror: str) -> tuple[str, bool]:
    """The ``[host."..."]`` URL for a mirror base and whether it needs ``override_path``."""
    what = f"mirror for {upstream}"
    if not isinstance(mirror, str) or not mirror:
        raise UsageError(f"{what}: empty")
    scheme = "https"
    for prefix in ("https://", "http://"):
        if mirror.startswith(prefix):
            scheme, mirror = prefix[:-3], mirror[len(prefix) :]
            break
    host, _, path = mirror.partition("/")
    _check_registry_host(host, what)
    if not path:
        return f"{scheme}://{host}", False
    _check_repository_path(path, what)
    # The host URL is then the API root itself: containerd appends <repository>/manifests/...
    # to it verbatim, so it must carry the /v2 the distribution API starts with.
    return f"{scheme}://{host}/v2/{path}", True


def containerd_hosts(
    upstreams: Mapping[str, str],
    *,
    ca_file: str | None = None,
    skip_verify: bool = False,
    fallback: bool = False,
) -> dict[str, bytes]:
    """The containerd ``hosts.toml`` files redirecting each upstream registry to its mirror.

    ``upstreams`` maps an upstream registry host as written in image references (``docker.io``,
    ``example.local``, ``registry.example:5000``) to its mirror base in the internal registry:
    ``host[:port]`` plus an optional path prefix (``registry.internal.example/mirror/docker.io``),
    optionally preceded by ``https://`` (the default) or ``http://``. The result maps
    ``<upstream>/hosts.toml`` (relative to containerd's ``config_path``, usually
    ``/etc/containerd/certs.d``) to the file's bytes. A port stays in the directory name
    (``registry.example:5000``), the spelling every containerd release since 1.5 looks up on
    Unix. ``ca_file`` (absolute, or relative to the ``hosts.toml``) and ``skip_verify`` apply to
    the mirror host. The mirror is trusted to resolve tags (``pull`` and ``resolve``).

    The mirror is the ``server``: nodes never reach the upstream, which an air-gapped cluster
    must not try and a connected one must not silently use. With ``fallback``, the mirror is a
    ``[host]`` and the upstream the ``server`` containerd falls back to when the mirror fails.
    Each file starts with comments saying which it is and how nodes authenticate to a mirror
    that asks for credentials.
    """
    if not isinstance(upstreams, Mapping):
        raise UsageError("upstreams must map upstream registry hosts to mirrors")
    if ca_file is not None and (not isinstance(ca_file, str) or not ca_file or "\x00" in ca_file):
        raise UsageError(f"CA file {ca_file!r} is not a usable path")
    if not isinstance(skip_verify, bool):
        raise UsageError("skip_verify must be a boolean")

    files: dict[str, bytes] = {}
    for upstream in sorted(upstreams):
        _check_registry_host(upstream, "upstream registry")
        url, override_path = _mirror_url(upstream, upstreams[upstream])
        options = ['capabilities = ["pull", "resolve"]']
        if override_path:
            options.append("override_path = true")
        if ca_file is not None:
            options.append(f"ca = {toml_string(ca_file)}")
        if skip_verify:
            options.append("skip_verify = true")
        lines = _hosts_notes(upstream, url.split("://", 1)[1].split("/", 1)[0], fallback)
        if fallback:
            lines += [
                f"server = {toml_string(f'https://{upstream}')}",
                "",
                f"[host.{toml_string(url)}]",
                *(f"  {option}" for option in options),
            ]
        else:
            lines += [f"server = {toml_string(url)}", *options]
        files[f"{upstream}/{HOSTS_FILE}"] = ("\n".join(lines) + "\n").encode("utf-8")
    return files


def _hosts_notes(upstream: str, mirror_host: str, fallback: bool) -> list[str]:
    """The comment lines heading a ``hosts.toml`` (both names are checked registry hosts)."""
    if fallback:
        how = [
            f"# containerd pulls images named {upstream}/... from the internal mirror first and,",
            f"# when it fails, from https://{upstream} itself (promote --hosts-fallback).",
        ]
    else:
        how = [
            f"# containerd pulls images named {upstream}/... from the internal mirror only: no",
            f"# node ever reaches https://{upstream} (promote --hosts-fallback would allow that).",
        ]
    return [
        *how,
        f"# If {mirror_host} asks for credentials: give the pods an imagePullSecret for",
        f"# {upstream} (the registry their images name; the kubelet picks secrets by it and",
        "# containerd presents them to the mirror) holding the mirror's credentials, or, for every",
        "# pod of the node, add to this file (readable by root only):",
        '#   [header]\n#     Authorization = "Basic <base64 of user:password>"',
        "",
    ]
