"""Argo CD Application / repository Secret and containerd hosts.toml generation."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from bundler.adapters.deploy import (
    ANNOTATION_CHART_DIGEST,
    PASSWORD_STAND_IN,
    SECRET_TYPE_LABEL,
    USERNAME_STAND_IN,
    ChartLocation,
    argocd_application,
    argocd_repository_secret,
    argocd_tls_certs,
    containerd_hosts,
    toml_string,
)
from bundler.errors import UsageError

DIGEST = "sha256:" + "ab" * 32
LOCATION = ChartLocation(
    registry="registry.internal.example:5000",
    repository="platform/charts",
    chart="demo",
    version="1.2.3+build.7",
    digest=DIGEST,
)


# ------------------------------------------------------------------ the CRD schema


def _closed(node: Any) -> Any:
    """The CRD's schema as plain JSON Schema.

    ``x-kubernetes-*`` keywords are dropped. Kubernetes prunes fields a structural schema does not
    declare, so an unknown (e.g. misspelt) field would silently vanish on apply; to catch that
    here, every object with declared ``properties`` that does not preserve unknown fields is
    closed with ``additionalProperties: false``.
    """
    if isinstance(node, list):
        return [_closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _closed(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def application_validator(shared_data: Path) -> jsonschema.Draft7Validator:
    crd_path = shared_data / "argocd" / "application-crd.yaml"
    if not crd_path.is_file():
        pytest.skip(f"Argo CD Application CRD {crd_path} not present")
    crd = yaml.safe_load(crd_path.read_text(encoding="utf-8"))
    assert crd["spec"]["names"]["kind"] == "Application"
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    schema = _closed(version["schema"]["openAPIV3Schema"])
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _app(**kwargs: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"name": "demo", "destination_namespace": "demo-prod"}
    args.update(kwargs)
    location = args.pop("location", LOCATION)
    doc = yaml.safe_load(argocd_application(location, **args))
    assert isinstance(doc, dict)
    return doc


def _errors(validator: jsonschema.Draft7Validator, doc: dict[str, Any]) -> list[str]:
    return [e.message for e in validator.iter_errors(doc)]


# ------------------------------------------------------------------ Application


def test_application_validates_against_crd(
    application_validator: jsonschema.Draft7Validator,
) -> None:
    values = "image:\n  registry: registry.internal.example:5000\nreplicas: 2\n"
    doc = _app(values=values, project="platform", destination_server="https://10.0.0.1:6443")
    assert _errors(application_validator, doc) == []

    assert doc["apiVersion"] == "argoproj.io/v1alpha1"
    assert doc["kind"] == "Application"
    assert doc["metadata"]["name"] == "demo"
    assert doc["metadata"]["namespace"] == "argocd"
    assert doc["metadata"]["annotations"] == {ANNOTATION_CHART_DIGEST: DIGEST}
    source = doc["spec"]["source"]
    assert source["repoURL"] == "registry.internal.example:5000/platform/charts"
    assert "oci://" not in source["repoURL"]
    assert source["chart"] == "demo"
    assert source["targetRevision"] == "1.2.3+build.7"  # as is: Helm maps '+' to the tag itself
    assert source["helm"] == {"values": values}
    assert doc["spec"]["project"] == "platform"
    assert doc["spec"]["destination"] == {
        "server": "https://10.0.0.1:6443",
        "namespace": "demo-prod",
    }


def test_application_minimal_without_digest_and_repository(
    application_validator: jsonschema.Draft7Validator,
) -> None:
    location = ChartLocation("registry.internal.example", "", "demo", "0.1.0", None)
    doc = _app(location=location)
    assert _errors(application_validator, doc) == []
    assert doc["spec"]["source"]["repoURL"] == "registry.internal.example"
    assert "annotations" not in doc["metadata"]
    assert "helm" not in doc["spec"]["source"]
    assert doc["spec"]["project"] == "default"
    assert doc["spec"]["destination"]["server"] == "https://kubernetes.default.svc"
    # A version that reads as a number in YAML stays a string.
    location = ChartLocation("localhost:5000", "", "demo", "1.0.0", None)
    assert isinstance(_app(location=location)["spec"]["source"]["targetRevision"], str)


@pytest.mark.parametrize(
    "breakage",
    [
        "revision-int",
        "no-destination",
        "no-project",
        "no-repo-url",
        "misspelt-field",
        "values-not-string",
    ],
)
def test_broken_application_fails_validation(
    application_validator: jsonschema.Draft7Validator, breakage: str
) -> None:
    good = _app(values="a: 1\n")
    assert _errors(application_validator, good) == []
    doc = copy.deepcopy(good)
    source = doc["spec"]["source"]
    if breakage == "revision-int":
        source["targetRevision"] = 1
    elif breakage == "no-destination":
        del doc["spec"]["destination"]
    elif breakage == "no-project":
        del doc["spec"]["project"]
    elif breakage == "no-repo-url":
        del source["repoURL"]
    elif breakage == "misspelt-field":
        # Not a required field: only the closed schema notices (Kubernetes would prune it).
        source["chartName"] = source.pop("chart")
    elif breakage == "values-not-string":
        source["helm"]["values"] = {"a": 1}
    assert _errors(application_validator, doc) != []


def test_application_is_deterministic() -> None:
    one = argocd_application(LOCATION, name="demo", destination_namespace="demo", values="a: 1\n")
    two = argocd_application(LOCATION, name="demo", destination_namespace="demo", values="a: 1\n")
    assert one == two
    text = one.decode()
    # Stable, human order: header fields first, not sorted keys.
    assert text.index("apiVersion:") < text.index("kind:") < text.index("metadata:")
    assert text.index("metadata:") < text.index("spec:")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "Demo"}, "application name"),
        ({"name": "demo_app"}, "application name"),
        ({"name": ""}, "application name"),
        ({"namespace": "a" * 64}, "application namespace"),
        ({"destination_namespace": "prod.eu"}, "destination namespace"),
        ({"destination_server": "kubernetes.default.svc"}, "destination server"),
        ({"destination_server": "ftp://x"}, "destination server"),
        ({"destination_server": "https://x\n"}, "destination server"),
        ({"project": "Platform"}, "project"),
        ({"values": "a: [1\n"}, "YAML error"),
        ({"values": "- 1\n- 2\n"}, "mapping"),
        ({"values": "a: 1\na: 2\n"}, "duplicate"),
    ],
)
def test_application_refuses_bad_input(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"name": "demo", "destination_namespace": "demo"}
    args.update(kwargs)
    with pytest.raises(UsageError, match=match):
        argocd_application(LOCATION, **args)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"registry": "registry"}, "does not name a registry"),  # would read as docker.io/...
        ({"registry": "index.docker.io"}, "docker.io"),
        ({"registry": "bad host"}, "registry host"),
        ({"registry": "reg.example/charts"}, "registry host"),
        ({"registry": "oci://reg.example"}, "registry host"),
        ({"registry": ""}, "empty"),
        ({"repository": "Platform/charts"}, "repository"),
        ({"repository": "platform//charts"}, "repository"),
        ({"repository": "/platform"}, "repository"),
        ({"repository": "platform:1"}, "repository"),
        ({"chart": "Demo"}, "chart name"),
        ({"chart": "a/b"}, "chart name"),
        ({"chart": ""}, "chart name"),
        ({"version": "1.2.3.4"}, "SemVer"),
        ({"version": "latest"}, "SemVer"),
        ({"version": ""}, "SemVer"),
        ({"digest": "sha256:abc"}, "digest"),
        ({"digest": "md5:" + "0" * 32}, "digest"),
    ],
)
def test_chart_location_refuses_bad_fields(fields: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {
        "registry": "registry.internal.example",
        "repository": "platform/charts",
        "chart": "demo",
        "version": "1.0.0",
        "digest": None,
    }
    args.update(fields)
    with pytest.raises(UsageError, match=match):
        ChartLocation(**args)


def test_chart_location_accepts_registry_forms() -> None:
    for registry in ("localhost", "localhost:5000", "127.0.0.1:5000", "[::1]:5000", "a.b.c"):
        assert ChartLocation(registry, "", "demo", "1.0.0", None).url == registry
    assert LOCATION.tag == "1.2.3_build.7"
    assert LOCATION.oci_name == "registry.internal.example:5000/platform/charts/demo"
    assert LOCATION.reference == f"{LOCATION.oci_name}:1.2.3_build.7@{DIGEST}"


# ------------------------------------------------------------------ repository Secret


def test_repository_secret() -> None:
    raw = argocd_repository_secret(LOCATION, name="internal-charts", username="robot")
    text = raw.decode()
    assert text.startswith("#")
    header = text[: text.index("apiVersion:")]
    assert "stand-in value" in header and "holds no secret" in header
    assert "kubectl" in header and "create secret" in header and "kubeseal" in header
    doc = yaml.safe_load(raw)
    assert doc["apiVersion"] == "v1"
    assert doc["kind"] == "Secret"
    assert doc["metadata"]["name"] == "internal-charts"
    assert doc["metadata"]["namespace"] == "argocd"
    assert doc["metadata"]["labels"] == {SECRET_TYPE_LABEL: "repository"}
    assert SECRET_TYPE_LABEL == "argocd.argoproj.io/secret-type"
    assert "data" not in doc  # only stringData, and nothing secret in it
    assert doc["stringData"] == {
        "type": "helm",
        "name": "internal-charts",
        "url": "registry.internal.example:5000/platform/charts",
        "enableOCI": "true",
        "username": "robot",
        "password": PASSWORD_STAND_IN,
    }
    assert PASSWORD_STAND_IN.startswith("<") and PASSWORD_STAND_IN.endswith(">")
    assert "oci://" not in doc["stringData"]["url"]


def test_repository_secret_without_username_has_only_stand_ins() -> None:
    location = ChartLocation("registry.internal.example", "", "demo", "1.0.0", None)
    doc = yaml.safe_load(argocd_repository_secret(location, name="charts", namespace="gitops"))
    assert doc["metadata"]["namespace"] == "gitops"
    assert doc["stringData"]["url"] == "registry.internal.example"
    assert doc["stringData"]["username"] == USERNAME_STAND_IN
    assert doc["stringData"]["password"] == PASSWORD_STAND_IN
    secretish = {k: v for k, v in doc["stringData"].items() if k in ("password", "username")}
    assert all(v.startswith("<set me") for v in secretish.values())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "Charts"}, "secret name"),
        ({"namespace": "argo.cd"}, "secret namespace"),
        ({"username": "a:b"}, "username"),
        ({"username": "a\nb"}, "username"),
        ({"username": ""}, "username"),
    ],
)
def test_repository_secret_refuses_bad_input(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"name": "charts"}
    args.update(kwargs)
    with pytest.raises(UsageError, match=match):
        argocd_repository_secret(LOCATION, **args)


# ------------------------------------------------------------------ containerd hosts.toml


def _parse_all(files: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    return {path: tomllib.loads(data.decode("utf-8")) for path, data in files.items()}


def test_hosts_toml_with_fallback_maps_each_upstream_to_its_mirror_then_itself() -> None:
    files = containerd_hosts(
        {
            "example.local": "registry.internal.example/mirror/example.local",
            "docker.io": "registry.internal.example/mirror/docker.io",
            "quay.example:5000": "registry.internal.example:8443/mirror/quay",
        },
        fallback=True,
    )
    assert sorted(files) == [
        "docker.io/hosts.toml",
        "example.local/hosts.toml",
        "quay.example:5000/hosts.toml",  # the port stays in the directory name
    ]
    parsed = _parse_all(files)
    assert parsed["docker.io/hosts.toml"] == {
        "server": "https://docker.io",
        "host": {
            "https://registry.internal.example/v2/mirror/docker.io": {
                "capabilities": ["pull", "resolve"],
                "override_path": True,
            }
        },
    }
    assert "registry-1.docker.io" not in files["docker.io/hosts.toml"].decode()
    assert parsed["example.local/hosts.toml"]["server"] == "https://example.local"
    assert list(parsed["example.local/hosts.toml"]["host"]) == [
        "https://registry.internal.example/v2/mirror/example.local"
    ]
    quay = parsed["quay.example:5000/hosts.toml"]
    assert quay["server"] == "https://quay.example:5000"
    assert quay["host"] == {
        "https://registry.internal.example:8443/v2/mirror/quay": {
            "capabilities": ["pull", "resolve"],
            "override_path": True,
        }
    }
    # Deterministic.
    assert files == containerd_hosts(
        {
            "quay.example:5000": "registry.internal.example:8443/mirror/quay",
            "docker.io": "registry.internal.example/mirror/docker.io",
            "example.local": "registry.internal.example/mirror/example.local",
        },
        fallback=True,
    )
    assert "from https://example.local itself (promote --hosts-fallback)" in (
        files["example.local/hosts.toml"].decode()
    )


def test_hosts_toml_names_the_mirror_alone_unless_fallback_is_asked() -> None:
    """No upstream anywhere in the file's settings: containerd has nothing to fall back to."""
    files = containerd_hosts(
        {
            "example.local": "registry.internal.example/mirror/example.local",
            "quay.example:5000": "registry.internal.example:8443",
        },
        ca_file="/etc/pki/internal-ca.pem",
    )
    parsed = _parse_all(files)
    assert parsed["example.local/hosts.toml"] == {
        "server": "https://registry.internal.example/v2/mirror/example.local",
        "capabilities": ["pull", "resolve"],
        "override_path": True,
        "ca": "/etc/pki/internal-ca.pem",
    }
    assert parsed["quay.example:5000/hosts.toml"] == {
        "server": "https://registry.internal.example:8443",
        "capabilities": ["pull", "resolve"],
        "ca": "/etc/pki/internal-ca.pem",
    }
    for name, data in files.items():
        upstream = name.split("/", 1)[0]
        settings = [ln for ln in data.decode().splitlines() if ln and not ln.startswith("#")]
        assert not any(f"//{upstream}" in line for line in settings), settings
        assert "host" not in parsed[name]


def test_hosts_toml_says_how_nodes_authenticate_to_the_mirror() -> None:
    for fallback in (False, True):
        text = containerd_hosts(
            {"example.local": "registry.internal.example/m"}, fallback=fallback
        )["example.local/hosts.toml"].decode()
        notes = "\n".join(ln for ln in text.splitlines() if ln.startswith("#"))
        assert "If registry.internal.example asks for credentials" in notes
        assert "imagePullSecret for\n# example.local" in notes
        assert "[header]" in notes and "Authorization" in notes
        assert ("no\n# node ever reaches https://example.local" in notes) is not fallback
        # The note is comments only: what containerd reads is unchanged by it.
        commented = tomllib.loads(text)
        assert "header" not in commented


def test_hosts_toml_ca_and_skip_verify() -> None:
    upstreams = {"example.local": "registry.internal.example/mirror/example.local"}
    plain = _parse_all(containerd_hosts(upstreams, fallback=True))["example.local/hosts.toml"]
    (host,) = plain["host"].values()
    assert "ca" not in host and "skip_verify" not in host

    files = containerd_hosts(
        upstreams, ca_file="/etc/pki/internal-ca.pem", skip_verify=True, fallback=True
    )
    (host,) = _parse_all(files)["example.local/hosts.toml"]["host"].values()
    assert host["ca"] == "/etc/pki/internal-ca.pem"
    assert host["skip_verify"] is True
    alone = _parse_all(containerd_hosts(upstreams, ca_file="ca.crt", skip_verify=True))
    assert alone["example.local/hosts.toml"]["ca"] == "ca.crt"
    assert alone["example.local/hosts.toml"]["skip_verify"] is True

    files = containerd_hosts(upstreams, ca_file="ca.crt", fallback=True)
    (host,) = _parse_all(files)["example.local/hosts.toml"]["host"].values()
    assert host["ca"] == "ca.crt"
    assert "skip_verify" not in host


def test_hosts_toml_mirror_without_path_and_plain_http() -> None:
    files = containerd_hosts(
        {"example.local": "registry.internal.example", "docker.io": "http://localhost:5000/m/d"},
        fallback=True,
    )
    parsed = _parse_all(files)
    assert parsed["example.local/hosts.toml"]["host"] == {
        "https://registry.internal.example": {"capabilities": ["pull", "resolve"]}
    }
    assert parsed["docker.io/hosts.toml"]["host"] == {
        "http://localhost:5000/v2/m/d": {"capabilities": ["pull", "resolve"], "override_path": True}
    }


@pytest.mark.parametrize(
    "path",
    [
        'C:\\certs\\"internal" ca.pem',
        "/etc/certs/back\\slash\\\\double.pem",
        '/etc/"quoted"/ca.pem',
        "/etc/tab\there/new\nline/cr\r/bs\b/ff\f/del\x7f/nul-ish\x01.pem",
        "/etc/ünïcødé/証明書.pem",
        "/etc/trailing-backslash\\",
        '"',
    ],
)
def test_hosts_toml_escapes_paths(path: str) -> None:
    files = containerd_hosts({"example.local": "registry.internal.example/m"}, ca_file=path)
    data = files["example.local/hosts.toml"]
    assert tomllib.loads(data.decode("utf-8"))["ca"] == path
    # A TOML basic string holds no raw control characters.
    assert (
        all(ch == "\n" or ord(ch) >= 0x20 for ch in data.decode()) and "\x7f" not in data.decode()
    )


def test_toml_string_round_trips_every_awkward_character() -> None:
    chars = "".join(chr(c) for c in range(0x00, 0x80)) + "é€𝄞\u2028\ufeff"
    doc = tomllib.loads(f"v = {toml_string(chars)}\n")
    assert doc["v"] == chars
    assert toml_string('a"b\\c') == '"a\\"b\\\\c"'
    with pytest.raises(UsageError):
        toml_string("\ud800")


def test_hosts_toml_empty_mapping() -> None:
    assert containerd_hosts({}) == {}


@pytest.mark.parametrize(
    ("upstreams", "match"),
    [
        ({"registry": "registry.internal.example/m"}, "upstream registry"),
        ({"index.docker.io": "registry.internal.example/m"}, "docker.io"),
        ({"_default": "registry.internal.example/m"}, "upstream registry"),
        ({"bad host": "registry.internal.example/m"}, "upstream registry"),
        ({"example.local/path": "registry.internal.example/m"}, "upstream registry"),
        ({"https://example.local": "registry.internal.example/m"}, "upstream registry"),
        ({"example.local:port": "registry.internal.example/m"}, "upstream registry"),
        ({"example.local\n": "registry.internal.example/m"}, "upstream registry"),
        ({"": "registry.internal.example/m"}, "upstream registry"),
        ({"example.local": ""}, "mirror"),
        ({"example.local": "registry/mirror"}, "mirror"),
        ({"example.local": "registry.internal.example/Mirror"}, "mirror"),
        ({"example.local": "registry.internal.example/mirror//x"}, "mirror"),
        ({"example.local": "registry.internal.example/mirror/"}, "mirror"),
        ({"example.local": 'registry.internal.example/a"b'}, "mirror"),
        ({"example.local": "ftp://registry.internal.example/m"}, "mirror"),
        ({"example.local": "registry.internal.example/m:tag"}, "mirror"),
    ],
)
def test_hosts_toml_refuses_bad_hosts(upstreams: dict[str, str], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        containerd_hosts(upstreams)


def test_hosts_toml_refuses_bad_options() -> None:
    upstreams = {"example.local": "registry.internal.example/m"}
    with pytest.raises(UsageError, match="CA file"):
        containerd_hosts(upstreams, ca_file="")
    with pytest.raises(UsageError, match="CA file"):
        containerd_hosts(upstreams, ca_file="a\x00b")


def test_application_with_auto_sync_and_a_tracked_range_validates_against_crd(
    application_validator: jsonschema.Draft7Validator,
) -> None:
    doc = _app(sync_policy="auto", track="1.x", project="platform")
    assert _errors(application_validator, doc) == []
    assert doc["spec"]["syncPolicy"] == {"automated": {"prune": True, "selfHeal": True}}
    assert doc["spec"]["source"]["targetRevision"] == "1.x"
    manual = _app()
    assert "syncPolicy" not in manual["spec"]
    assert manual["spec"]["source"]["targetRevision"] == "1.2.3+build.7"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"sync_policy": "sometimes"}, "auto or manual"), ({"track": "1.x\nevil: 1"}, "range")],
)
def test_application_refuses_bad_sync_choices(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        _app(**kwargs)


def test_tls_certs_configmap_trusts_the_ca_for_the_registry_host() -> None:
    pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    doc = yaml.safe_load(argocd_tls_certs(LOCATION, pem))
    assert doc["kind"] == "ConfigMap"
    assert doc["metadata"]["name"] == "argocd-tls-certs-cm"
    assert doc["metadata"]["namespace"] == "argocd"
    assert doc["data"] == {"registry.internal.example": pem.decode()}  # the host, no port
    with pytest.raises(UsageError, match="no PEM certificate"):
        argocd_tls_certs(LOCATION, b"not a certificate")
