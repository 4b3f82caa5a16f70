"""Self-tests of the loopback harness, exercised through real tools."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from harness.registry import RegistryServer
from harness.tokenserver import TokenServer, parse_scope

Runner = Callable[..., subprocess.CompletedProcess[str]]
RegistryFactory = Callable[..., RegistryServer]

pytestmark = pytest.mark.integration

KINDS = ["plain", "tls", "token"]
API_REF = "example.local/demo/api:1.0.0"
WEB_REF = "example.local/demo/web:1.0.0"
MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


def _registry(request: pytest.FixtureRequest, kind: str) -> RegistryServer:
    server: RegistryServer = request.getfixturevalue(f"{kind}_registry")
    return server


def _index_digest(layout: Path, ref: str) -> str:
    for m in json.loads((layout / "index.json").read_text())["manifests"]:
        if m["annotations"]["org.opencontainers.image.ref.name"] == ref:
            return str(m["digest"])
    raise KeyError(ref)


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


# ------------------------------------------------------------------ /v2/
@pytest.mark.parametrize("kind", KINDS)
def test_v2_endpoint(request: pytest.FixtureRequest, kind: str) -> None:
    reg = _registry(request, kind)
    assert reg.is_running()
    assert reg.host.startswith("127.0.0.1:")
    anon = requests.get(f"{reg.url}/v2/", verify=reg.verify, timeout=10)
    if kind == "plain":
        assert anon.status_code == 200
        assert reg.creds is None and reg.ca_path is None
        return
    assert anon.status_code == 401
    challenge = anon.headers["WWW-Authenticate"]
    if kind == "tls":
        assert reg.url.startswith("https://")
        assert challenge.startswith("Basic ")
    else:
        assert reg.token_server is not None
        assert challenge.startswith("Bearer ")
        assert f'realm="{reg.token_server.realm}"' in challenge
        assert f'service="{reg.token_server.service}"' in challenge
    ok = requests.get(f"{reg.url}/v2/", verify=reg.verify, headers=reg.auth_headers(), timeout=10)
    assert ok.status_code == 200, ok.text


def test_tls_registry_rejects_bad_credentials(tls_registry: RegistryServer) -> None:
    bad = requests.get(
        f"{tls_registry.url}/v2/", verify=tls_registry.verify, auth=("tester", "wrong"), timeout=10
    )
    assert bad.status_code == 401
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{tls_registry.url}/v2/", timeout=10)  # system CAs do not know ours


def test_tls_certificate_valid_for_localhost(tls_registry: RegistryServer) -> None:
    url = f"https://localhost:{tls_registry.port}/v2/"
    r = requests.get(url, verify=tls_registry.verify, auth=("tester", "s3cret-pass"), timeout=10)
    assert r.status_code == 200


# ---------------------------------------------------------- skopeo round-trip
@pytest.mark.parametrize("kind", KINDS)
def test_skopeo_copy_roundtrip(
    request: pytest.FixtureRequest, kind: str, skopeo: str, run: Runner, example_layout: Path
) -> None:
    reg = _registry(request, kind)
    for ref, repo, extra in (
        (API_REF, "harness/api:1.0.0", []),
        (WEB_REF, "harness/web:1.0.0", ["--all"]),
    ):
        want = _index_digest(example_layout, ref)
        run(
            [
                skopeo,
                "copy",
                "-q",
                *extra,
                *reg.skopeo_args(dest=True),
                f"oci:{example_layout}:{ref}",
                reg.docker_ref(repo),
            ]
        )
        raw = run([skopeo, "inspect", "--raw", *reg.skopeo_args(), reg.docker_ref(repo)]).stdout
        assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == want
        # and the registry itself reports the same digest
        name, tag = repo.split(":")
        scopes = [f"repository:{name}:pull"]
        head = requests.head(
            f"{reg.url}/v2/{name}/manifests/{tag}",
            headers={"Accept": MANIFEST_ACCEPT, **reg.auth_headers(scopes)},
            verify=reg.verify,
            timeout=10,
        )
        assert head.status_code == 200
        assert head.headers["Docker-Content-Digest"] == want


def test_skopeo_with_docker_config(
    tls_registry: RegistryServer, skopeo: str, run: Runner, example_layout: Path, tmp_path: Path
) -> None:
    authfile = tls_registry.docker_config(tmp_path / "docker")
    cfg = json.loads(authfile.read_text())
    assert base64.b64decode(cfg["auths"][tls_registry.host]["auth"]).decode() == tls_registry.creds
    run(
        [
            skopeo,
            "copy",
            "-q",
            "--authfile",
            authfile,
            "--dest-cert-dir",
            tls_registry.cert_dir,
            f"oci:{example_layout}:example.local/demo/migrate:1.0.0",
            tls_registry.docker_ref("harness/authfile:1"),
        ]
    )
    tags = run(
        [
            skopeo,
            "list-tags",
            "--authfile",
            authfile,
            "--cert-dir",
            tls_registry.cert_dir,
            tls_registry.docker_ref("harness/authfile"),
        ]
    ).stdout
    assert json.loads(tags)["Tags"] == ["1"]
    assert sorted(os.listdir(tls_registry.cert_dir)) == ["ca.crt"]


# ---------------------------------------------------------------- tokens
def test_token_server_grants(token_server: TokenServer) -> None:
    realm = token_server.realm
    service = token_server.service
    scopes = ["repository:demo/a:pull,push", "repository:demo/b:pull"]
    params = [("service", service)] + [("scope", s) for s in scopes]

    anon = requests.get(realm, params=params, timeout=10)
    assert anon.status_code == 200
    user = requests.get(realm, params=params, auth=("tester", "s3cret-pass"), timeout=10)
    assert user.status_code == 200
    bad = requests.get(realm, params=params, auth=("tester", "nope"), timeout=10)
    assert bad.status_code == 401
    bare = requests.get(realm, params=[("service", service)], timeout=10)
    assert bare.status_code == 200

    body = anon.json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 300 and body["issued_at"]

    def claims(token: str) -> dict[str, Any]:
        return cast(dict[str, Any], json.loads(_b64url_decode(token.split(".")[1])))

    assert claims(body["token"])["access"] == [
        {"type": "repository", "name": "demo/a", "actions": ["pull"]},
        {"type": "repository", "name": "demo/b", "actions": ["pull"]},
    ]
    user_claims = claims(user.json()["token"])
    assert user_claims["access"] == [
        {"type": "repository", "name": "demo/a", "actions": ["pull", "push"]},
        {"type": "repository", "name": "demo/b", "actions": ["pull"]},
    ]
    assert user_claims["sub"] == "tester" and user_claims["aud"] == service
    assert user_claims["iss"] == token_server.issuer
    assert {"exp", "nbf", "iat", "jti"} <= user_claims.keys()
    assert claims(bare.json()["token"])["access"] == []

    recs = token_server.snapshot()
    assert [(r.status, r.authenticated, r.username) for r in recs] == [
        (200, False, None),
        (200, True, "tester"),
        (401, False, "tester"),
        (200, False, None),
    ]
    assert recs[0].scopes == scopes
    assert recs[0].actions_for("demo/a") == {"pull", "push"}
    assert recs[0].granted_for("demo/a") == {"pull"}
    assert recs[1].granted_for("demo/a") == {"pull", "push"}
    assert recs[3].scopes == []


def test_token_is_valid_es256_jwt(token_server: TokenServer) -> None:
    token = token_server.issue_token("tester", [])
    header_b64, claims_b64, sig_b64 = token.split(".")
    header = json.loads(_b64url_decode(header_b64))
    assert header["alg"] == "ES256"
    cert = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    raw = _b64url_decode(sig_b64)
    assert len(raw) == 64
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    pub = cert.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    pub.verify(der, f"{header_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))


def test_token_registry_enforces_scopes(
    token_registry: RegistryServer, token_server: TokenServer
) -> None:
    url = f"{token_registry.url}/v2/harness/scoped/blobs/uploads/"
    scope = ["repository:harness/scoped:pull,push"]
    anon = requests.post(
        url, headers=token_registry.auth_headers(scope, anonymous=True), timeout=10
    )
    assert anon.status_code == 401  # anonymous token carries only "pull"
    user = requests.post(url, headers=token_registry.auth_headers(scope), timeout=10)
    assert user.status_code == 202, user.text
    recs = token_server.snapshot()
    assert [r.authenticated for r in recs] == [False, True]
    assert recs[0].granted_for("harness/scoped") == {"pull"}
    assert recs[1].granted_for("harness/scoped") == {"pull", "push"}


def test_skopeo_push_requests_push_scope(
    token_registry: RegistryServer,
    token_server: TokenServer,
    skopeo: str,
    run: Runner,
    example_layout: Path,
) -> None:
    run(
        [
            skopeo,
            "copy",
            "-q",
            *token_registry.skopeo_args(dest=True),
            f"oci:{example_layout}:example.local/demo/migrate:1.0.0",
            token_registry.docker_ref("harness/recorded:1"),
        ]
    )
    recs = token_server.snapshot()
    assert recs, "skopeo never asked the token server"
    assert all(r.authenticated and r.status == 200 for r in recs)
    assert any("push" in r.granted_for("harness/recorded") for r in recs)
    # anonymous pull through the same registry works and asks only for pull
    token_server.clear()
    run(
        [
            skopeo,
            "inspect",
            "--raw",
            *token_registry.skopeo_args(anonymous=True),
            token_registry.docker_ref("harness/recorded:1"),
        ]
    )
    recs = token_server.snapshot()
    assert recs and not any(r.authenticated for r in recs)
    assert all(r.actions_for("harness/recorded") <= {"pull"} for r in recs)


def test_parse_scope() -> None:
    assert parse_scope("repository:a/b:pull,push") == {
        "type": "repository",
        "name": "a/b",
        "actions": ["pull", "push"],
    }
    assert parse_scope("repository:localhost:5000/a:pull") == {
        "type": "repository",
        "name": "localhost:5000/a",
        "actions": ["pull"],
    }
    catalog = parse_scope("registry:catalog:*")
    assert catalog is not None and catalog["actions"] == ["*"]
    assert parse_scope("garbage") is None


# -------------------------------------------------------------- lifecycle
def test_registry_factory_fresh_and_stoppable(registry_factory: RegistryFactory) -> None:
    reg = registry_factory("plain")
    r = requests.get(f"{reg.url}/v2/_catalog", timeout=10)
    assert r.status_code == 200 and r.json() == {"repositories": []}
    proc = reg.process
    assert proc is not None
    reg.stop()
    assert proc.poll() is not None and reg.process is None
    reg.stop()  # idempotent


# ------------------------------------------------------------------ synth
def test_synth_is_deterministic(synth: ModuleType, example_layout: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    synth.example_set(again)
    files = sorted(p.relative_to(example_layout) for p in example_layout.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (example_layout / rel).read_bytes() == (again / rel).read_bytes(), rel
    for p in (example_layout / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(p.read_bytes()).hexdigest() == p.name
    index = json.loads((example_layout / "index.json").read_text())
    refs = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert refs == list(synth.EXAMPLE_REFS)
    assert all(
        {"mediaType", "digest", "size", "annotations"} <= m.keys() for m in index["manifests"]
    )
    assert synth.layout_size(example_layout) < 1024 * 1024


def test_synth_shares_base_layer(synth: ModuleType, tmp_path: Path) -> None:
    base = synth.LayerSpec("shared-base", 4096)
    a = synth.write_image(tmp_path, "x/a:1", [base, synth.LayerSpec("a", 100)])
    b = synth.write_image(tmp_path, "x/b:1", [base, synth.LayerSpec("b", 100)], ("linux", "arm64"))
    blobs = tmp_path / "blobs" / "sha256"

    def layers(desc: dict[str, Any]) -> list[str]:
        manifest = json.loads((blobs / desc["digest"].split(":")[1]).read_text())
        return [layer["digest"] for layer in manifest["layers"]]

    assert layers(a)[0] == layers(b)[0] and layers(a)[1] != layers(b)[1]
    assert b["platform"] == {"architecture": "arm64", "os": "linux", "variant": "v8"}
    idx = synth.write_index(tmp_path, "x/multi:1", [a, b])
    assert idx["mediaType"] == synth.INDEX_MEDIA_TYPE


# ------------------------------------------------------------------- tools
def test_helm_is_v4(helm: str, run: Runner) -> None:
    assert run([helm, "version", "--short"]).stdout.startswith("v4.")
