"""Helpers of the ``bundler export`` / ``bundler import`` integration tests.

Bundles are packed from the synthetic example layout (never from the network), signed with
throw-away keys, and judged with tools other than bundler where it matters: ``tarfile`` for
what an archive holds, skopeo and raw registry HTTP for what a registry holds, and the registry's
own storage directory for which blobs have arrived.
"""

from __future__ import annotations

import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from copy_support import Cli, Judge, Result, sha256_digest
from harness.registry import RegistryServer
from pack_support import DEMO_CHART, layout_source, pack_ok

from bundler.adapters.crypto import generate_key, write_key_pair

PASS_VAR = "BUNDLER_TEST_KEY_PASS"
PASSPHRASE = "transfer-tests-passphrase-4711"
REF_NAME = "org.opencontainers.image.ref.name"
SIG_SUFFIX = ".sig"
TOOLS_REF = "example.local/demo/tools:1.0.0"
BIG_REF = "example.local/demo/big:1.0.0"


@dataclass(frozen=True)
class Keys:
    directory: Path

    def private(self, name: str) -> Path:
        return self.directory / f"{name}.key"

    def public(self, name: str) -> Path:
        return self.directory / f"{name}.pub"


def make_keys(directory: Path, *names: str) -> Keys:
    for name in names:
        write_key_pair(directory / name, generate_key("ecdsa-p256"), PASSPHRASE.encode())
    return Keys(directory)


def signature_tag(digest: str) -> str:
    return digest.replace(":", "-") + SIG_SUFFIX


# ------------------------------------------------------------------------------- the CLI
def ok(res: Result) -> Result:
    assert res.returncode == 0, res.describe()
    return res


def pack(cli: Cli, layout: Path, to: str, *flags: str) -> str:
    """Pack the demo chart with every image from ``layout``; the bundle digest."""
    doc = pack_ok(cli, "--chart", DEMO_CHART, *layout_source(layout), *flags, "--to", to)
    return str(doc["digest"])


def sign(cli: Cli, location: str, key: Path) -> None:
    ok(cli("sign", location, "--key", key, "--passphrase-env", PASS_VAR))


def export(cli: Cli, source: str, archive: Path, *flags: str | Path) -> dict[str, Any]:
    res = ok(cli("export", source, "--to", f"archive:{archive}", "-o", "json", *flags))
    doc: dict[str, Any] = res.json
    return doc


def import_(cli: Cli, archive: Path, to: str, key: Path, *flags: str) -> Result:
    return cli("import", f"archive:{archive}", "--to", to, "--key", key, "-o", "json", *flags)


def verified(cli: Cli, location: str, key: Path, *flags: str) -> str:
    res = ok(cli("verify", location, "--key", key, *flags))
    assert " verified: demo " in res.stdout, res.describe()
    return res.stdout


# ---------------------------------------------------------------------------- archives
def members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return tar.getmembers()


def blob_members(path: Path) -> dict[str, int]:
    """{digest: size} of every blob file in an archive (each name must appear once).

    Only ``index.json`` may come more than once (a signature appended to the archive)."""
    names = [m.name for m in members(path) if m.isfile() and m.name != "index.json"]
    assert len(names) == len(set(names)), f"{path} holds a member twice"
    return {
        "sha256:" + m.name.rsplit("/", 1)[1]: m.size
        for m in members(path)
        if m.isfile() and m.name.startswith("blobs/sha256/")
    }


def read_member(path: Path, name: str) -> bytes:
    with tarfile.open(path) as tar:
        f = tar.extractfile(name)
        assert f is not None, name
        return f.read()


def archive_refs(path: Path) -> dict[str, str]:
    """{ref name: digest} of an archive's index.json."""
    index = json.loads(read_member(path, "index.json"))
    return {
        m["annotations"][REF_NAME]: m["digest"]
        for m in index["manifests"]
        if REF_NAME in (m.get("annotations") or {})
    }


@dataclass
class Graph:
    """What a manifest reaches: manifests (in visiting order) and {blob digest: size}."""

    manifests: list[str]
    blobs: dict[str, int]


def graph_of(read_json: Any, root: str) -> Graph:
    """The graph under ``root``; ``read_json(digest)`` returns a parsed manifest."""
    out = Graph([], {})
    stack = [root]
    while stack:
        digest = stack.pop()
        if digest in out.manifests:
            continue
        out.manifests.append(digest)
        doc = read_json(digest)
        for child in doc.get("manifests", []):
            if child["mediaType"].endswith(("manifest.v1+json", "index.v1+json")):
                stack.append(child["digest"])
            else:
                out.blobs[child["digest"]] = child["size"]
        for blob in [*([doc["config"]] if "config" in doc else []), *doc.get("layers", [])]:
            out.blobs[blob["digest"]] = blob["size"]
    return out


def archive_graph(path: Path, root: str) -> Graph:
    return graph_of(lambda d: json.loads(read_member(path, "blobs/sha256/" + d[7:])), root)


def signature_graph(path: Path) -> Graph:
    """Every signature manifest in an archive (by its ``.sig`` name) and its blobs."""
    out = Graph([], {})
    for ref, digest in archive_refs(path).items():
        if ref.endswith(SIG_SUFFIX):
            sub = archive_graph(path, digest)
            out.manifests += sub.manifests
            out.blobs.update(sub.blobs)
    return out


def flip_member_byte(path: Path, name: str) -> None:
    """One byte in the middle of a member's data inverted; the tar keeps its length."""
    with tarfile.open(path) as tar:
        member = tar.getmember(name)
        offset, size = member.offset_data, member.size
    with path.open("r+b") as f:
        f.seek(offset + size // 2)
        byte = f.read(1)
        f.seek(offset + size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))


def member_data_range(path: Path, name: str) -> tuple[int, int]:
    with tarfile.open(path) as tar:
        member = tar.getmember(name)
        return member.offset_data, member.size


def extract(archive: Path, directory: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(directory, filter="data")
    return directory


def tar_layout(layout: Path, archive: Path) -> None:
    """A layout directory as a tar in the order bundler writes it (metadata first)."""
    blobs = sorted((layout / "blobs" / "sha256").iterdir())
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("oci-layout", "index.json"):
            tar.add(layout / name, arcname=name)
        for blob in blobs:
            tar.add(blob, arcname=f"blobs/sha256/{blob.name}")


# --------------------------------------------------------------------------- registries
def storage_blobs(reg: RegistryServer) -> set[str]:
    """Digests of every blob the registry has committed to its storage."""
    root = reg.storage_dir / "docker" / "registry" / "v2" / "blobs" / "sha256"
    if not root.is_dir():
        return set()
    return {f"sha256:{p.parent.name}" for p in root.glob("*/*/data")}


def registry_graph(judge: Judge, reg: RegistryServer, repo: str, root: str) -> Graph:
    def read(digest: str) -> Any:
        resp = judge.manifest(reg, repo, digest)
        assert resp.status_code == 200, (digest, resp.status_code, resp.text)
        assert sha256_digest(resp.content) == digest
        return resp.json()

    return graph_of(read, root)


def assert_nothing_tagged(judge: Judge, reg: RegistryServer, repo: str) -> None:
    """The repository has no tag at all (distribution answers 404 or an empty list)."""
    assert judge.tags(reg, repo) == [], f"{reg.ref(repo)} has tags"


def env_with_passphrase(cli: Cli) -> Cli:
    cli.env[PASS_VAR] = PASSPHRASE
    return cli


def file_size(path: Path) -> int:
    return os.stat(path).st_size
