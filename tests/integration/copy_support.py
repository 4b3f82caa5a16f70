"""Helpers of the copy/auth integration tests: the CLI as a user runs it, and judges.

:class:`Cli` runs ``python -m bundler.cli.main`` in a subprocess with a private Docker config
directory and cache directory, so no test sees another test's credentials or hints.
:class:`Judge` wraps skopeo and raw registry HTTP for independent checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from harness.registry import RegistryServer

BUNDLER = [sys.executable, "-m", "bundler.cli.main"]
WEB_REF = "example.local/demo/web:1.0.0"
API_REF = "example.local/demo/api:1.0.0"
WORKER_REF = "example.local/demo/worker:1.0.0"
MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
BIG_LAYER_BYTES = 200 * 1024 * 1024
# Variables that would change which CAs or credentials a subprocess trusts or uses.
_SCRUBBED = (
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "DOCKER_CONFIG",
    "REGISTRY_AUTH_FILE",
    "XDG_CACHE_HOME",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def unique(prefix: str) -> str:
    """A repository path unique to this call (the session registries are shared)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ------------------------------------------------------------------------------ CLI
@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    argv: list[str]

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def error_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def describe(self) -> str:
        return (
            f"$ {' '.join(self.argv)}\nexit {self.returncode}\n--- stdout\n{self.stdout}"
            f"\n--- stderr\n{self.stderr}"
        )

    def assert_no_result(self) -> None:
        """A failure printed no result: nothing on stdout, or with ``-o json`` only the error
        document (the stderr line and the exit code, schemas/cli-error.schema.json)."""
        if "json" not in self.argv:
            assert self.stdout == "", self.describe()
            return
        assert json.loads(self.stdout) == {
            "error": self.error_line.removeprefix("error: "),
            "exitCode": self.returncode,
        }, self.describe()


class Cli:
    """``bundler`` run the way a user runs it, with a private DOCKER_CONFIG."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.config_dir = home / "docker-config"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
        self.env["DOCKER_CONFIG"] = str(self.config_dir)
        self.env["XDG_CACHE_HOME"] = str(home / "cache")
        self.env["NO_COLOR"] = "1"

    def login_config(self, *registries: RegistryServer) -> None:
        """Write config.json holding the credentials of every given registry."""
        auths: dict[str, Any] = {}
        for reg in registries:
            path = reg.docker_config(self.home / "scratch-config")
            auths.update(json.loads(path.read_text())["auths"])
        target = self.config_dir / "config.json"
        target.write_text(json.dumps({"auths": auths}, indent=2) + "\n")
        target.chmod(0o600)

    def popen(self, *args: str | os.PathLike[str], **kwargs: Any) -> subprocess.Popen[str]:
        argv = [*BUNDLER, *(str(a) for a in args)]
        return subprocess.Popen(
            argv,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **kwargs,
        )

    def __call__(
        self,
        *args: str | os.PathLike[str],
        input: str | None = None,
        timeout: float = 120,
    ) -> Result:
        argv = [*BUNDLER, *(str(a) for a in args)]
        proc = subprocess.run(
            argv,
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr, argv)

    def copy(
        self,
        src: str,
        dst: str,
        *flags: str | os.PathLike[str],
        timeout: float = 120,
    ) -> Result:
        return self("copy", "--from", src, "--to", dst, "-o", "json", *flags, timeout=timeout)

    def copy_ok(
        self, src: str, dst: str, *flags: str | os.PathLike[str], timeout: float = 120
    ) -> dict[str, Any]:
        res = self.copy(src, dst, *flags, timeout=timeout)
        assert res.returncode == 0, res.describe()
        doc: dict[str, Any] = res.json
        return doc


def registry_flags(reg: RegistryServer) -> list[str]:
    """The flags a user passes for this registry (CA file for TLS)."""
    return ["--ca-file", str(reg.ca_path)] if reg.ca_path is not None else []


# ---------------------------------------------------------------------------- judges
class Judge:
    """Independent views of what is where: skopeo, and raw distribution API calls."""

    def __init__(self, skopeo: str) -> None:
        self.skopeo = skopeo
        self.env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}

    def skopeo_run(self, *args: str | os.PathLike[str], timeout: float = 120) -> bytes:
        argv = [self.skopeo, *(str(a) for a in args)]
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, check=False, env=self.env)
        if proc.returncode != 0:
            raise AssertionError(
                f"skopeo failed ({proc.returncode}): {' '.join(argv)}\n"
                f"{proc.stderr.decode(errors='replace')}"
            )
        return proc.stdout

    def raw(self, transport_ref: str, reg: RegistryServer | None = None) -> bytes:
        """``skopeo inspect --raw`` bytes of any transport reference."""
        extra = reg.skopeo_args() if reg is not None else []
        return self.skopeo_run("inspect", "--raw", *extra, transport_ref)

    def raw_digest(self, transport_ref: str, reg: RegistryServer | None = None) -> str:
        return sha256_digest(self.raw(transport_ref, reg))

    def inspect(self, transport_ref: str, reg: RegistryServer | None = None) -> dict[str, Any]:
        extra = reg.skopeo_args() if reg is not None else []
        doc: dict[str, Any] = json.loads(self.skopeo_run("inspect", *extra, transport_ref))
        return doc

    # -- raw HTTP ---------------------------------------------------------------------
    @staticmethod
    def _headers(
        reg: RegistryServer, repo: str, extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        headers = reg.auth_headers([f"repository:{repo}:pull"])
        headers.update(extra or {})
        return headers

    def manifest(self, reg: RegistryServer, repo: str, ref: str) -> requests.Response:
        return requests.get(
            f"{reg.url}/v2/{repo}/manifests/{ref}",
            verify=reg.verify,
            timeout=30,
            headers=self._headers(reg, repo, {"Accept": MANIFEST_ACCEPT}),
        )

    def manifest_digest(self, reg: RegistryServer, repo: str, ref: str) -> str | None:
        resp = self.manifest(reg, repo, ref)
        if resp.status_code == 404:
            return None
        assert resp.status_code == 200, resp.text
        digest = sha256_digest(resp.content)
        assert resp.headers.get("Docker-Content-Digest") == digest
        return digest

    def blob_size(self, reg: RegistryServer, repo: str, digest: str) -> int | None:
        resp = requests.head(
            f"{reg.url}/v2/{repo}/blobs/{digest}",
            verify=reg.verify,
            timeout=30,
            headers=self._headers(reg, repo),
        )
        if resp.status_code == 404:
            return None
        assert resp.status_code == 200, (resp.status_code, resp.text)
        return int(resp.headers["Content-Length"])

    def tags(self, reg: RegistryServer, repo: str) -> list[str]:
        resp = requests.get(
            f"{reg.url}/v2/{repo}/tags/list",
            verify=reg.verify,
            timeout=30,
            headers=self._headers(reg, repo),
        )
        if resp.status_code == 404:
            return []
        assert resp.status_code == 200, resp.text
        return list(resp.json().get("tags") or [])


# ------------------------------------------------------------------------ layouts
def layout_index(layout: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((layout / "index.json").read_text())
    return doc


def layout_entry(layout: Path, ref: str) -> dict[str, Any]:
    for m in layout_index(layout)["manifests"]:
        if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == ref:
            return dict(m)
    raise KeyError(ref)


def layout_blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


def layout_json(layout: Path, digest: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(layout_blob(layout, digest))
    return doc


def graph(layout: Path, digest: str) -> tuple[list[str], dict[str, int]]:
    """(manifest digests, {blob digest: size}) reachable from a manifest in a layout."""
    manifests: list[str] = []
    blobs: dict[str, int] = {}

    def visit(d: str) -> None:
        if d in manifests:
            return
        manifests.append(d)
        doc = layout_json(layout, d)
        if "manifests" in doc:
            for child in doc["manifests"]:
                visit(child["digest"])
        else:
            for desc in [doc["config"], *doc["layers"]]:
                blobs[desc["digest"]] = desc["size"]

    visit(digest)
    return manifests, blobs


def archive_index(path: Path) -> dict[str, Any]:
    with tarfile.open(path) as tar:
        member = tar.extractfile("index.json")
        assert member is not None
        doc: dict[str, Any] = json.load(member)
        return doc


def archive_ref_names(path: Path) -> list[str]:
    return [
        m["annotations"]["org.opencontainers.image.ref.name"]
        for m in archive_index(path)["manifests"]
        if "org.opencontainers.image.ref.name" in (m.get("annotations") or {})
    ]


def leftovers(directory: Path) -> list[str]:
    """Temporary/partial files a failed write might have left in ``directory``."""
    return sorted(
        p.name for p in directory.iterdir() if p.name.endswith(".partial") or ".tmp" in p.name
    )


@dataclass(frozen=True)
class BigImage:
    layout: Path
    ref: str
    digest: str
    layer_digest: str
    layer_size: int


def push_with_skopeo(judge: Judge, layout: Path, ref: str, reg: RegistryServer, repo: str) -> str:
    """Put ``oci:layout:ref`` into ``reg/repo`` with skopeo; return the pushed digest."""
    judge.skopeo_run(
        "copy",
        "--all",
        "--quiet",
        *reg.skopeo_args(dest=True),
        f"oci:{layout}:{ref}",
        reg.docker_ref(repo),
    )
    return judge.raw_digest(reg.docker_ref(repo), reg)


def registry_blob_file(reg: RegistryServer, digest: str) -> Path:
    hexpart = digest.split(":", 1)[1]
    return (
        reg.storage_dir
        / "docker"
        / "registry"
        / "v2"
        / "blobs"
        / "sha256"
        / hexpart[:2]
        / hexpart
        / "data"
    )


def write_artifact_layout(
    layout: Path,
    ref: str,
    files: Sequence[tuple[str, bytes]],
    artifact_type: str = "application/vnd.example.files.v1",
) -> str:
    """A minimal OCI artifact (empty config, titled file layers) in a layout; its digest."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def put(data: bytes) -> dict[str, Any]:
        digest = sha256_digest(data)
        (blobs / digest.split(":")[1]).write_bytes(data)
        return {"digest": digest, "size": len(data)}

    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": artifact_type,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", **put(b"{}")},
        "layers": [
            {
                "mediaType": "application/vnd.example.file.v1",
                **put(data),
                "annotations": {"org.opencontainers.image.title": name},
            }
            for name, data in files
        ],
    }
    raw = json.dumps(manifest, separators=(",", ":")).encode()
    desc = put(raw)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **desc,
                "annotations": {"org.opencontainers.image.ref.name": ref},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    return str(desc["digest"])
