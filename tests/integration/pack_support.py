"""Helpers of the ``bundler pack`` / ``bundler inspect`` integration tests.

The CLI runs as a user runs it (``copy_support.Cli``) with the Helm binary's directory first on
``PATH`` and Helm's own homes in a private directory. Bundles are read back with independent
tools (tar, skopeo, raw registry HTTP) and with ``bundler inspect``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from copy_support import API_REF, WEB_REF, WORKER_REF, Cli

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_CHART = REPO_ROOT / "examples" / "chart" / "demo"
EXAMPLE_CONFIG = REPO_ROOT / "examples" / "bundle.yaml"
LOCK_SCHEMA = REPO_ROOT / "schemas" / "bundle-lock.schema.json"

MIGRATE_REF = "example.local/demo/migrate:1.0.0"
EXAMPLE_REFS = (WEB_REF, API_REF, WORKER_REF, MIGRATE_REF)
BUNDLE_TAG = "demo:1.0.0"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
BUNDLE_ARTIFACT_TYPE = "application/vnd.bundler.bundle.v1+json"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
ROLE = "dev.bundler.role"
IMAGE_REF = "dev.bundler.image.ref"

# The values that compose each image of the demo chart, and the part each one sets, as
# differential rendering finds them.
EXPECTED_VALUE_PATHS = {
    WEB_REF: [
        {"path": "web.image.registry", "form": "registry"},
        {"path": "web.image.repository", "form": "repository"},
        {"path": "web.image.tag", "form": "tag"},
    ],
    API_REF: [{"path": "api.image", "form": "reference"}],
    MIGRATE_REF: [{"path": "api.migrate.image", "form": "reference"}],
    WORKER_REF: [
        {"path": "worker.image.repository", "form": "repository"},
        {"path": "worker.image.tag", "form": "tag"},
    ],
}
DEFAULT_RENDERING: dict[str, Any] = {
    "values": {},
    "kubeVersion": None,
    "apiVersions": [],
    "release": "bundle",
    "namespace": "default",
    "skipTests": False,
}


def helm_homes(home: Path) -> dict[str, str]:
    """Helm's config, cache and data homes inside ``home`` (nothing of the user's is read)."""
    homes = {}
    for kind in ("CONFIG", "CACHE", "DATA"):
        path = home / f"helm-{kind.lower()}"
        path.mkdir(parents=True, exist_ok=True)
        homes[f"HELM_{kind}_HOME"] = str(path)
    return homes


def pack_cli(home: Path, helm: str) -> Cli:
    """The bundler CLI with a private Docker config and cache, Helm first on PATH."""
    cli = Cli(home)
    cli.env["PATH"] = os.pathsep.join([str(Path(helm).parent), cli.env.get("PATH", "")])
    cli.env.pop("BUNDLER_HELM", None)
    cli.env.update(helm_homes(home))
    return cli


def layout_source(layout: Path) -> list[str]:
    """Flags that take every image from an OCI layout and never from example.local."""
    return ["--source", f"oci:{layout}", "--no-upstream"]


def pack_ok(cli: Cli, *args: str | os.PathLike[str]) -> dict[str, Any]:
    res = cli("pack", *args, "-o", "json")
    assert res.returncode == 0, res.describe()
    doc: dict[str, Any] = res.json
    return doc


def lock_of(cli: Cli, location: str, *flags: str) -> dict[str, Any]:
    res = cli("inspect", location, "--lock", *flags)
    assert res.returncode == 0, res.describe()
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def inspect_ok(cli: Cli, location: str, *flags: str) -> dict[str, Any]:
    res = cli("inspect", location, "-o", "json", *flags)
    assert res.returncode == 0, res.describe()
    doc: dict[str, Any] = res.json
    return doc


class Helm:
    """The real Helm binary with private homes."""

    def __init__(self, binary: str, home: Path) -> None:
        self.binary = binary
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HELM_")}
        self.env.update(helm_homes(home))

    def __call__(self, *args: str | os.PathLike[str], cwd: Path | None = None) -> str:
        argv = [self.binary, *(str(a) for a in args)]
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=self.env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            raise AssertionError(
                f"helm failed ({proc.returncode}): {' '.join(argv)}\n"
                f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
            )
        return proc.stdout


# ---------------------------------------------------------------------------- reading bundles
def archive_file(path: Path, name: str) -> bytes:
    with tarfile.open(path) as tar:
        member = tar.extractfile(name)
        assert member is not None, name
        return member.read()


def archive_blob(path: Path, digest: str) -> bytes:
    return archive_file(path, "blobs/sha256/" + digest.split(":", 1)[1])


def archive_json(path: Path, digest: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(archive_blob(path, digest))
    return doc


def archive_blob_sizes(path: Path) -> dict[str, int]:
    """{digest: size} of every file under blobs/sha256/ in an archive."""
    with tarfile.open(path) as tar:
        return {
            "sha256:" + m.name.rsplit("/", 1)[1]: m.size
            for m in tar.getmembers()
            if m.isfile() and m.name.startswith("blobs/sha256/")
        }


def bundle_index_of(path: Path) -> dict[str, Any]:
    """The bundle index of an archive: the manifest its index.json names ``demo:1.0.0``."""
    index = json.loads(archive_file(path, "index.json"))
    named = [
        m
        for m in index["manifests"]
        if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == BUNDLE_TAG
    ]
    assert len(named) == 1, index
    return archive_json(path, named[0]["digest"])


def chart_entry(index: dict[str, Any]) -> dict[str, Any]:
    charts = [m for m in index["manifests"] if m.get("annotations", {}).get(ROLE) == "chart"]
    assert len(charts) == 1, index
    return dict(charts[0])


def image_entries(index: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        m["annotations"][IMAGE_REF]: m
        for m in index["manifests"]
        if m.get("annotations", {}).get(ROLE) == "image"
    }


def _normalise(text: str) -> str:
    """Docker's normalisation, written here independently of bundler's Reference."""
    name, at, digest = text.partition("@")
    first, slash, rest = name.partition("/")
    if not slash or not ("." in first or ":" in first or first == "localhost"):
        name = f"docker.io/{name}"
        first, _, rest = name.partition("/")
    if first == "docker.io" and "/" not in rest.partition(":")[0]:
        name = f"docker.io/library/{rest}"
    last = name.rsplit("/", 1)[1]
    if ":" not in last and not at:
        name += ":latest"
    return name + (at + digest if at else "")


_FLAG_IMAGE = re.compile(r"^--[a-z0-9-]*image[a-z0-9-]*=(\S+)$")


def rendered_images(text: str) -> set[str]:
    """Every image of every container, ``image`` field and ``--*image*=`` argument rendered."""
    found: set[str] = set()

    def walk(node: Any, key: str | None) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("containers", "initContainers", "ephemeralContainers") and isinstance(
                    v, list
                ):
                    for container in v:
                        if isinstance(container, dict) and isinstance(container.get("image"), str):
                            found.add(_normalise(container["image"]))
                walk(v, str(k))
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str):
            match = _FLAG_IMAGE.match(node)
            if match:
                found.add(_normalise(match.group(1)))
            elif key == "image" and "/" in node:
                found.add(_normalise(node))

    for doc in yaml.load_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        walk(doc, None)
    return found


def stand_ins(synth: ModuleType, layout: Path, images: list[dict[str, Any]]) -> list[str]:
    """Make one synthetic image per reference; flags pinning digests the chart pins upstream."""
    flags: list[str] = []
    for image in images:
        reference = image["reference"]
        name = reference.partition("@")[0]
        if ":" not in name.rsplit("/", 1)[1]:
            name += ":latest"
        made = synth.write_image(layout, name, [synth.LayerSpec(seed=reference, size=2048)])
        if "@" in reference:
            paths = [v["path"] for v in image["valuePaths"] if v["form"] == "digest"]
            assert paths, f"{reference}: the chart pins a digest and no value controls it"
            flags += [f"--set={path}={made['digest']}" for path in paths]
    return flags
