"""``bundler serve``: a promoted layout served read-only, pulled by skopeo, Helm and bundler."""

from __future__ import annotations

import base64
import json
import os
import selectors
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import bundler.api as api
from bundler.model.digest import Digest

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLER = [sys.executable, "-m", "bundler.cli.main"]


@pytest.fixture(scope="module")
def internal(tmp_path_factory: pytest.TempPathFactory, synth: ModuleType, helm: str) -> Path:
    """The example bundle packed, signed and promoted into the layout ``internal``."""
    home = tmp_path_factory.mktemp("serve")
    shutil.copytree(REPO_ROOT / "examples", home / "examples")
    synth.example_set(home / "out" / "images")
    key_path, pub = api.generate_key_pair(home / "vendor", b"vendor")
    promoter_path, _ = api.generate_key_pair(home / "promoter", b"promoter")
    with api.Session(use_blob_cache=False) as session:
        spec = api.load_bundle_config(home / "examples" / "bundle.yaml")
        options = api.PackOptions(helm=helm)
        api.pack(spec, f"oci:{home / 'vendor-layout'}", options=options, session=session)
        api.sign(f"oci:{home / 'vendor-layout'}", api.load_private_key(key_path, b"vendor"))
        api.promote(
            f"oci:{home / 'vendor-layout'}",
            f"oci:{home / 'internal'}",
            api.one_key_policy(pub),
            api.load_private_key(promoter_path, b"promoter"),
            serve_as="registry.internal.example/platform",
            helm=helm,
            session=session,
        )
    return home / "internal"


def _names(layout: Path) -> dict[str, str]:
    """Served ``NAME:TAG`` -> digest, from the layout's ref names (host dropped)."""
    index = json.loads((layout / "index.json").read_text())
    out = {}
    for entry in index["manifests"]:
        ref = entry.get("annotations", {}).get("org.opencontainers.image.ref.name", "")
        if ref.startswith("registry.internal.example/"):
            out[ref.removeprefix("registry.internal.example/")] = entry["digest"]
    return out


def _start(
    *args: str | Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [*BUNDLER, "serve", *map(str, args), "--listen", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stderr is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stderr, selectors.EVENT_READ)
        ready = sel.select(timeout=60)
    if not ready:
        proc.kill()
        pytest.fail("bundler serve printed no address within 60 s")
    line = proc.stderr.readline()
    assert "serving " in line and " at http" in line, line
    return proc, line.split(" at ")[1].split()[0]


@pytest.fixture
def served(internal: Path) -> Iterator[str]:
    proc, address = _start(f"oci:{internal}")
    yield address
    proc.terminate()
    proc.wait(timeout=30)
    assert proc.returncode in (143, -15), proc.returncode


def _get(
    url: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_skopeo_copies_a_promoted_image_from_the_served_layout(
    internal: Path, served: str, skopeo: str, tmp_path: Path
) -> None:
    names = _names(internal)
    image = next(n for n in names if "/charts/" not in n and ":" in n)
    host = served.removeprefix("http://")
    dest = tmp_path / "copied"
    proc = subprocess.run(
        [skopeo, "copy", "--src-tls-verify=false", f"docker://{host}/{image}", f"oci:{dest}:x"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    copied = json.loads((dest / "index.json").read_text())["manifests"][0]["digest"]
    assert copied == names[image]


def test_helm_pulls_and_renders_the_promoted_chart(
    internal: Path, served: str, helm: str, tmp_path: Path
) -> None:
    names = _names(internal)
    chart = next(
        n for n in names if (internal / "blobs").exists() and _is_chart(internal, names[n])
    )
    repository, _, version = chart.rpartition(":")
    host = served.removeprefix("http://")
    pulled = subprocess.run(
        [helm, "pull", f"oci://{host}/{repository}", "--version", version, "--plain-http",
         "-d", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "HELM_CONFIG_HOME": str(tmp_path / "helm")},
    )  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    [archive] = list(tmp_path.glob("*.tgz"))
    rendered = subprocess.run(
        [helm, "template", "demo", str(archive)], capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    assert "registry.internal.example/platform/" in rendered.stdout


def _is_chart(layout: Path, digest: str) -> bool:
    manifest = json.loads(
        (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
    )
    return bool(
        manifest.get("config", {}).get("mediaType") == "application/vnd.cncf.helm.config.v1+json"
    )


def test_the_distribution_api_answers_as_the_pull_section_says(internal: Path, served: str) -> None:
    names = _names(internal)
    image = next(n for n in names if not _is_chart(internal, names[n]))
    repository, _, tag = image.rpartition(":")
    status, headers, body = _get(f"{served}/v2/")
    assert status == 200 and headers["Docker-Distribution-API-Version"] == "registry/2.0"
    status, headers, body = _get(f"{served}/v2/{repository}/manifests/{tag}")
    assert status == 200 and headers["Docker-Content-Digest"] == names[image]
    assert str(Digest.of(body)) == names[image]
    status, headers, head_body = _get(f"{served}/v2/{repository}/manifests/{tag}", method="HEAD")
    assert status == 200 and head_body == b"" and headers["Content-Length"] == str(len(body))
    by_digest = _get(f"{served}/v2/{repository}/manifests/{names[image]}")
    assert by_digest[0] == 200 and by_digest[2] == body
    manifest = json.loads(body)
    layer = (manifest.get("layers") or [manifest["manifests"][0]])[0]
    blob_url = f"{served}/v2/{repository}/blobs/{layer['digest']}"
    status, _, whole = _get(blob_url)
    if status == 404:  # an index's first child is a manifest, not a blob: fetch it as one
        pytest.skip("the first image is an index; its children are covered by skopeo's copy")
    assert status == 200 and str(Digest.of(whole)) == layer["digest"]
    status, headers, part = _get(blob_url, {"Range": "bytes=1-4"})
    assert status == 206 and part == whole[1:5]
    assert headers["Content-Range"] == f"bytes 1-4/{len(whole)}"
    assert _get(blob_url, {"Range": f"bytes={len(whole) + 5}-"})[0] == 416
    status, _, listing = _get(f"{served}/v2/{repository}/tags/list")
    assert status == 200 and tag in json.loads(listing)["tags"]
    assert _get(f"{served}/v2/{repository}/manifests/nope")[0] == 404
    assert _get(f"{served}/v2/{repository}/blobs/sha256:{'0' * 64}")[0] == 404
    assert _get(f"{served}/v2/{repository}/blobs/sha256:..%2f..%2fetc")[0] == 400
    status, _, answer = _get(f"{served}/v2/{repository}/manifests/{tag}", method="PUT")
    assert status == 405 and json.loads(answer)["errors"][0]["code"] == "UNSUPPORTED"


def test_basic_auth_refuses_a_pull_without_the_password(internal: Path) -> None:
    proc, address = _start(
        f"oci:{internal}", "--user", "site", "--password-env", "SERVE_PASS",
        env={"SERVE_PASS": "s3cret-pass"},
    )  # fmt: skip
    try:
        status, headers, _ = _get(f"{address}/v2/")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
        wrong = base64.b64encode(b"site:guess").decode()
        assert _get(f"{address}/v2/", {"Authorization": f"Basic {wrong}"})[0] == 401
        right = base64.b64encode(b"site:s3cret-pass").decode()
        assert _get(f"{address}/v2/", {"Authorization": f"Basic {right}"})[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_with_json_output_the_address_is_a_document_on_stdout(internal: Path) -> None:
    import jsonschema
    from test_cli_json import REGISTRY, SCHEMAS

    proc = subprocess.Popen(
        [*BUNDLER, "serve", f"oci:{internal}", "--listen", "127.0.0.1:0", "-o", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            assert sel.select(timeout=60), "no document within 60 s"
        lines = [proc.stdout.readline()]
        while lines[-1] not in ("}\n", ""):  # one indented document, closed by "}" alone
            lines.append(proc.stdout.readline())
        doc = json.loads("".join(lines))
        schema = json.loads((SCHEMAS / "serve-result.schema.json").read_text())
        jsonschema.Draft202012Validator(schema, registry=REGISTRY).validate(doc)
        assert doc["serving"] == f"oci:{internal}" and _get(f"{doc['address']}/v2/")[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serving_what_is_not_a_layout_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*BUNDLER, "serve", f"oci:{tmp_path / 'nothing'}", "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "is not an OCI layout" in proc.stderr


def test_bundler_copies_from_the_served_layout_with_its_own_client(
    internal: Path, served: str, tmp_path: Path
) -> None:
    names = _names(internal)
    image = next(n for n in names if not _is_chart(internal, names[n]))
    host = served.removeprefix("http://")
    copied = subprocess.run(
        [*BUNDLER, "copy", "--from", f"{host}/{image}", "--to", f"oci:{tmp_path / 'c'}:x",
         "-o", "json", "--plain-http"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")},
    )  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    assert json.loads(copied.stdout)["digest"] == names[image]


def test_served_over_tls_the_layout_is_pulled_against_its_ca(
    internal: Path, tmp_path: Path
) -> None:
    from harness.certs import generate_server_certs

    certs = generate_server_certs(tmp_path / "tls")
    proc, address = _start(
        f"oci:{internal}", "--tls-cert", certs.server_cert, "--tls-key", certs.server_key
    )
    try:
        assert address.startswith("https://127.0.0.1:")
        names = _names(internal)
        image = next(n for n in names if not _is_chart(internal, names[n]))
        copied = subprocess.run(
            [*BUNDLER, "copy", "--from", f"{address.removeprefix('https://')}/{image}",
             "--to", f"oci:{tmp_path / 'c'}:x", "-o", "json", "--ca-file", str(certs.ca_cert)],
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")},
        )  # fmt: skip
        assert copied.returncode == 0, copied.stderr
        assert json.loads(copied.stdout)["digest"] == names[image]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
