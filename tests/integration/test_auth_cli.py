"""Registry authentication through the CLI: basic over TLS with a custom CA, bearer tokens
with scope upgrades and cross-repository mounts, large blobs, and ``bundler login/logout``."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from copy_support import (
    API_REF,
    WEB_REF,
    BigImage,
    Cli,
    Judge,
    graph,
    layout_entry,
    registry_flags,
    unique,
)
from harness.registry import RegistryServer
from harness.tokenserver import TokenServer

KINDS = ["plain", "tls", "token"]


def _registry(request: pytest.FixtureRequest, kind: str) -> RegistryServer:
    server: RegistryServer = request.getfixturevalue(f"{kind}_registry")
    return server


# ------------------------------------------------------------------ large blobs
@pytest.mark.parametrize("kind", KINDS)
def test_large_layer_through_each_registry(
    request: pytest.FixtureRequest,
    kind: str,
    cli: Cli,
    judge: Judge,
    big_image: BigImage,
) -> None:
    reg = _registry(request, kind)
    cli.login_config(reg)
    repo = unique(f"big/{kind}")
    doc = cli.copy_ok(
        f"oci:{big_image.layout}:{big_image.ref}",
        reg.ref(f"{repo}:1"),
        *registry_flags(reg),
        timeout=90,
    )
    assert doc["digest"] == big_image.digest
    assert doc["blobs"]["copied"] == 2
    assert doc["bytes"]["copied"] >= big_image.layer_size > 190 * 1024 * 1024
    assert judge.raw_digest(reg.docker_ref(f"{repo}:1"), reg) == big_image.digest
    assert judge.blob_size(reg, repo, big_image.layer_digest) == big_image.layer_size


# ----------------------------------------------------------- refusals and TLS
@pytest.mark.parametrize("kind", ["tls", "token"])
def test_wrong_password_is_an_auth_error(
    request: pytest.FixtureRequest,
    kind: str,
    cli: Cli,
    example_layout: Path,
) -> None:
    reg = _registry(request, kind)
    config = reg.docker_config(cli.config_dir)
    doc = json.loads(config.read_text())
    doc["auths"][reg.host]["auth"] = base64.b64encode(b"tester:wrong-password").decode()
    config.write_text(json.dumps(doc))
    res = cli.copy(
        f"oci:{example_layout}:{API_REF}",
        reg.ref(f"{unique('denied/api')}:1"),
        *registry_flags(reg),
    )
    assert res.returncode == 4, res.describe()
    assert res.error_line.startswith("error: ")
    assert "tester" in res.error_line
    assert "wrong-password" not in res.stderr


@pytest.mark.parametrize("kind", ["tls", "token"])
def test_push_without_credentials_is_an_auth_error(
    request: pytest.FixtureRequest,
    kind: str,
    cli: Cli,
    example_layout: Path,
) -> None:
    reg = _registry(request, kind)
    res = cli.copy(
        f"oci:{example_layout}:{API_REF}", reg.ref(f"{unique('anon/api')}:1"), *registry_flags(reg)
    )
    assert res.returncode == 4, res.describe()
    line = res.error_line
    assert line.startswith("error: ")
    assert reg.host in line
    assert any(word in line for word in ("login", "credentials", "anonymous", "refused"))


def test_tls_without_ca_file_is_a_transport_error_naming_the_certificate(
    cli: Cli,
    tls_registry: RegistryServer,
    example_layout: Path,
    tmp_path: Path,
) -> None:
    cli.login_config(tls_registry)
    res = cli.copy(f"oci:{example_layout}:{API_REF}", tls_registry.ref(f"{unique('ca/api')}:1"))
    assert res.returncode == 5, res.describe()
    assert res.error_line.startswith("error: ")
    assert "certificate" in res.error_line
    # and as a source, too
    res = cli.copy(tls_registry.ref("ca/api:1"), f"oci:{tmp_path / 'out'}:x")
    assert res.returncode == 5, res.describe()
    assert "certificate" in res.error_line
    assert not (tmp_path / "out").exists()


def test_anonymous_pull_from_token_registry_works(
    cli: Cli,
    token_registry: RegistryServer,
    token_server: TokenServer,
    example_layout: Path,
    tmp_path: Path,
) -> None:
    """The token service grants anonymous pulls; no credentials are needed to read."""
    pusher = Cli(tmp_path / "pusher")
    pusher.login_config(token_registry)
    repo = unique("public/api")
    pusher.copy_ok(f"oci:{example_layout}:{API_REF}", token_registry.ref(f"{repo}:1"))
    token_server.clear()
    doc = cli.copy_ok(token_registry.ref(f"{repo}:1"), f"oci:{tmp_path / 'out'}:api")
    assert doc["digest"] == layout_entry(example_layout, API_REF)["digest"]
    requests_seen = token_server.snapshot()
    assert requests_seen and all(r.username is None for r in requests_seen)
    assert all(r.actions_for(repo) == {"pull"} for r in requests_seen)


# ------------------------------------------------------- token scopes and mounts
def test_token_scopes_upgrade_and_cross_repository_mount(
    cli: Cli,
    token_registry: RegistryServer,
    token_server: TokenServer,
    example_layout: Path,
    judge: Judge,
) -> None:
    cli.login_config(token_registry)
    src = unique("scopes/src")
    dst = unique("scopes/dst")
    web_digest = layout_entry(example_layout, WEB_REF)["digest"]
    _, blobs = graph(example_layout, web_digest)
    cli.copy_ok(f"oci:{example_layout}:{WEB_REF}", token_registry.ref(f"{src}:1.0.0"))

    token_server.clear()
    doc = cli.copy_ok(token_registry.ref(f"{src}:1.0.0"), token_registry.ref(f"{dst}:1.0.0"))
    seen = token_server.snapshot()
    assert doc["digest"] == web_digest
    assert doc["blobs"]["total"] == len(blobs)
    assert doc["blobs"]["mounted"] > 0
    assert doc["blobs"]["mounted"] + doc["blobs"]["copied"] == len(blobs)
    assert doc["bytes"]["copied"] < sum(blobs.values())

    assert all(r.status == 200 and r.authenticated for r in seen), seen
    assert all(r.username == token_registry.username for r in seen)
    # a pull token for the source...
    assert any(r.actions_for(src) == {"pull"} for r in seen)
    # ...a pull-only token for the target (HEAD-before-upload) and a pull,push one
    assert any(r.actions_for(dst) == {"pull"} for r in seen), [r.scopes for r in seen]
    assert any(r.actions_for(dst) == {"pull", "push"} for r in seen), [r.scopes for r in seen]
    # the mount needs one token holding push on the target and pull on the source
    mount_tokens = [
        r for r in seen if {"pull", "push"} <= r.granted_for(dst) and "pull" in r.granted_for(src)
    ]
    assert mount_tokens, [r.scopes for r in seen]
    # no token asked for more than it needed: nothing pushes to the source
    assert all("push" not in r.actions_for(src) for r in seen)

    assert judge.raw_digest(token_registry.docker_ref(f"{dst}:1.0.0"), token_registry) == (
        web_digest
    )
    for blob, size in blobs.items():
        assert judge.blob_size(token_registry, dst, blob) == size


# --------------------------------------------------------------- login / logout
@pytest.mark.parametrize("kind", ["tls", "token"])
def test_login_copy_logout(
    request: pytest.FixtureRequest,
    kind: str,
    cli: Cli,
    judge: Judge,
    example_layout: Path,
) -> None:
    reg = _registry(request, kind)
    config = cli.config_dir / "config.json"
    assert not config.exists()
    res = cli(
        "login",
        reg.host,
        "-u",
        reg.username or "",
        "--password-stdin",
        *registry_flags(reg),
        input=f"{reg.password}\n",
    )
    assert res.returncode == 0, res.describe()
    assert reg.password is not None and reg.password not in res.stdout + res.stderr
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    doc = json.loads(config.read_text())
    assert reg.host in doc["auths"]

    repo = unique("login/api")
    pushed = cli.copy_ok(
        f"oci:{example_layout}:{API_REF}", reg.ref(f"{repo}:1"), *registry_flags(reg)
    )
    assert judge.raw_digest(reg.docker_ref(f"{repo}:1"), reg) == pushed["digest"]

    res = cli("logout", reg.host)
    assert res.returncode == 0, res.describe()
    assert reg.host not in json.loads(config.read_text()).get("auths", {})
    res = cli.copy(f"oci:{example_layout}:{API_REF}", reg.ref(f"{repo}:2"), *registry_flags(reg))
    assert res.returncode == 4, res.describe()


def test_login_with_explicit_registry_config_dir(
    cli: Cli,
    tls_registry: RegistryServer,
    example_layout: Path,
    tmp_path: Path,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    res = cli(
        "login",
        tls_registry.host,
        "-u",
        tls_registry.username or "",
        "--password-stdin",
        "--ca-file",
        str(tls_registry.ca_path),
        "--registry-config",
        str(elsewhere),
        input=f"{tls_registry.password}\n",
    )
    assert res.returncode == 0, res.describe()
    assert not (cli.config_dir / "config.json").exists()
    assert stat.S_IMODE((elsewhere / "config.json").stat().st_mode) == 0o600
    doc = cli.copy_ok(
        f"oci:{example_layout}:{API_REF}",
        tls_registry.ref(f"{unique('cfgdir/api')}:1"),
        "--ca-file",
        str(tls_registry.ca_path),
        "--registry-config",
        str(elsewhere),
    )
    assert doc["digest"] == layout_entry(example_layout, API_REF)["digest"]
    res = cli("logout", tls_registry.host, "--registry-config", str(elsewhere))
    assert res.returncode == 0, res.describe()
    assert tls_registry.host not in json.loads((elsewhere / "config.json").read_text())["auths"]


@pytest.mark.parametrize("kind", ["tls", "token"])
def test_login_with_wrong_password_writes_nothing(
    request: pytest.FixtureRequest,
    kind: str,
    cli: Cli,
) -> None:
    reg = _registry(request, kind)
    res = cli(
        "login",
        reg.host,
        "-u",
        reg.username or "",
        "--password-stdin",
        *registry_flags(reg),
        input="not-the-password\n",
    )
    assert res.returncode == 4, res.describe()
    assert res.error_line.startswith("error: ")
    assert "not-the-password" not in res.stderr
    assert list(cli.config_dir.iterdir()) == []


def test_login_keeps_other_entries_and_logout_of_unknown_host(
    cli: Cli,
    tls_registry: RegistryServer,
    token_registry: RegistryServer,
) -> None:
    for reg in (tls_registry, token_registry):
        res = cli(
            "login",
            reg.host,
            "-u",
            reg.username or "",
            "--password-stdin",
            *registry_flags(reg),
            input=f"{reg.password}\n",
        )
        assert res.returncode == 0, res.describe()
    auths = json.loads((cli.config_dir / "config.json").read_text())["auths"]
    assert {tls_registry.host, token_registry.host} <= set(auths)
    assert cli("logout", tls_registry.host).returncode == 0
    auths = json.loads((cli.config_dir / "config.json").read_text())["auths"]
    assert tls_registry.host not in auths and token_registry.host in auths
    res = cli("logout", "127.0.0.1:1")
    assert res.returncode == 0, res.describe()
    assert "No credentials" in res.stderr


@pytest.mark.parametrize("how", ["xdg-certs.d", "bundler-certs.d", "SSL_CERT_FILE"])
def test_tls_trusts_certs_d_and_ssl_cert_file_as_podman_and_openssl_do(
    how: str,
    cli: Cli,
    tls_registry: RegistryServer,
    example_layout: Path,
    tmp_path: Path,
) -> None:
    assert tls_registry.ca_path is not None
    cli.login_config(tls_registry)
    if how == "SSL_CERT_FILE":
        cli.env["SSL_CERT_FILE"] = str(tls_registry.ca_path)
    else:
        root = tmp_path / ("config/containers/certs.d" if how == "xdg-certs.d" else "certs.d")
        folder = root / tls_registry.host
        folder.mkdir(parents=True)
        (folder / "ca.crt").write_bytes(tls_registry.ca_path.read_bytes())
        if how == "xdg-certs.d":
            cli.env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
        else:
            cli.env["BUNDLER_CERTS_D"] = str(root)
    doc = cli.copy_ok(f"oci:{example_layout}:{API_REF}", tls_registry.ref(f"{unique('ca')}:1"))
    assert doc["digest"].startswith("sha256:")


def test_an_unknown_issuer_error_says_how_to_trust_the_ca(
    cli: Cli, tls_registry: RegistryServer, example_layout: Path
) -> None:
    cli.login_config(tls_registry)
    res = cli.copy(f"oci:{example_layout}:{API_REF}", tls_registry.ref(f"{unique('ca')}:1"))
    assert res.returncode == 5, res.describe()
    assert "--ca-file" in res.error_line and "certs.d" in res.error_line
