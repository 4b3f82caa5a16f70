"""Formats other tools write, chunked uploads and tag listing, against the real registry."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from harness.registry import RegistryServer

BUNDLER = [sys.executable, "-m", "bundler.cli.main"]
WEB = "example.local/demo/web:1.0.0"
API = "example.local/demo/api:1.0.0"


def bundler(*args: str, env_dir: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["DOCKER_CONFIG"] = str(env_dir / "docker")
    env["XDG_CACHE_HOME"] = str(env_dir / "cache")
    proc = subprocess.run(
        [*BUNDLER, *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"bundler {' '.join(args)} -> {proc.returncode}\n{proc.stderr}")
    return proc


def raw_digest(skopeo: str, registry: RegistryServer, ref: str) -> str:
    raw = subprocess.run(
        [skopeo, "inspect", "--raw", *registry.skopeo_args(), f"docker://{registry.host}/{ref}"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def test_docker_v2_manifests_travel_unchanged(
    tmp_path: Path, skopeo: str, plain_registry: RegistryServer, example_layout: Path
) -> None:
    # skopeo converts to Docker schema 2 on the way in; bundler must keep those bytes.
    subprocess.run(
        [
            skopeo,
            "copy",
            "--format",
            "v2s2",
            *plain_registry.skopeo_args(dest=True),
            f"oci:{example_layout}:{API}",
            f"docker://{plain_registry.host}/fmt/docker-v2:1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    source_digest = raw_digest(skopeo, plain_registry, "fmt/docker-v2:1")
    out = bundler(
        "copy",
        "--from",
        f"{plain_registry.host}/fmt/docker-v2:1",
        "--to",
        f"archive:{tmp_path}/v2.tar",
        "-o",
        "json",
        env_dir=tmp_path,
    )
    result = json.loads(out.stdout)
    assert result["digest"] == source_digest
    assert result["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    bundler(
        "copy",
        "--from",
        f"archive:{tmp_path}/v2.tar",
        "--to",
        f"{plain_registry.host}/fmt/docker-v2-back:1",
        env_dir=tmp_path,
    )
    assert raw_digest(skopeo, plain_registry, "fmt/docker-v2-back:1") == source_digest


def test_umoci_layout_without_top_level_media_type_is_copied(
    tmp_path: Path, umoci: str, skopeo: str, plain_registry: RegistryServer
) -> None:
    layout = tmp_path / "umoci"
    subprocess.run([umoci, "init", "--layout", str(layout)], check=True, timeout=60)
    subprocess.run([umoci, "new", "--image", f"{layout}:t"], check=True, timeout=60)
    index = json.loads((layout / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"]
    manifest = json.loads(
        (layout / "blobs" / "sha256" / manifest_digest.split(":")[1]).read_bytes()
    )
    assert "mediaType" not in manifest  # the case oras-py refuses
    out = bundler(
        "copy",
        "--from",
        f"oci:{layout}:t",
        "--to",
        f"{plain_registry.host}/fmt/umoci:t",
        "-o",
        "json",
        env_dir=tmp_path,
    )
    assert json.loads(out.stdout)["digest"] == manifest_digest
    assert raw_digest(skopeo, plain_registry, "fmt/umoci:t") == manifest_digest


def test_chunked_upload_through_the_real_registry(
    tmp_path: Path, synth: ModuleType, skopeo: str, plain_registry: RegistryServer
) -> None:
    layout = tmp_path / "layout"
    desc = synth.write_image(
        layout, "chunky", [synth.LayerSpec("chunky", 5 * 1024 * 1024 + 123, level=0)]
    )
    out = bundler(
        "copy",
        "--chunk-size",
        "1",
        "--from",
        f"oci:{layout}:chunky",
        "--to",
        f"{plain_registry.host}/fmt/chunky:1",
        "-o",
        "json",
        env_dir=tmp_path,
    )
    result = json.loads(out.stdout)
    assert result["blobs"]["copied"] == 2
    assert raw_digest(skopeo, plain_registry, "fmt/chunky:1") == desc["digest"]
    # skopeo pulls every layer back and checks its digest.
    subprocess.run(
        [
            skopeo,
            "copy",
            *plain_registry.skopeo_args(src=True),
            f"docker://{plain_registry.host}/fmt/chunky:1",
            f"oci:{tmp_path}/back:chunky",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def test_tags_lists_what_was_pushed(
    tmp_path: Path, plain_registry: RegistryServer, example_layout: Path
) -> None:
    for tag in ("1.0.0", "1.0.1", "latest"):
        bundler(
            "copy",
            "-q",
            "--from",
            f"oci:{example_layout}:{WEB}",
            "--to",
            f"{plain_registry.host}/fmt/tagged:{tag}",
            env_dir=tmp_path,
        )
    out = bundler("tags", f"{plain_registry.host}/fmt/tagged", "-o", "json", env_dir=tmp_path)
    assert sorted(json.loads(out.stdout)["tags"]) == ["1.0.0", "1.0.1", "latest"]
    missing = bundler(
        "tags", f"{plain_registry.host}/fmt/never-pushed", env_dir=tmp_path, check=False
    )
    assert missing.returncode == 3
    assert "fmt/never-pushed" in missing.stderr


def test_copy_json_output_matches_its_schema(
    tmp_path: Path, plain_registry: RegistryServer, example_layout: Path
) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema_path = Path(__file__).resolve().parents[2] / "schemas" / "copy-result.schema.json"
    schema = json.loads(schema_path.read_text())
    out = bundler(
        "copy",
        "--from",
        f"oci:{example_layout}:{WEB}",
        "--to",
        f"{plain_registry.host}/fmt/schema:1",
        "-o",
        "json",
        env_dir=tmp_path,
    )
    jsonschema.validate(json.loads(out.stdout), schema)
