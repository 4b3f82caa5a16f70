"""The library API: its public surface is pinned, and docs/library.md's example runs as written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import bundler.api

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC = REPO_ROOT / "docs" / "library.md"

PUBLIC = {
    "ApprovalResult", "BasicAuth", "BundleSpec", "BundlerError", "CopyResult", "Discovery",
    "ExportResult", "ImportResult", "InspectResult", "LayoutServer", "Location", "PackOptions",
    "PackResult", "PrivateKey", "PromotionResult", "PublicKey", "RegistryOptions", "Session",
    "SignResult", "SigningKey", "TrustPolicy", "VerifyReport", "approve", "copy", "export",
    "generate_key_pair", "images", "import_bundle", "inspect", "list_tags", "load_bundle_config",
    "load_private_key", "load_public_key_file", "load_token_key", "load_trust_policy", "login",
    "one_key_policy", "pack", "promote", "serve", "sign", "verify", "verify_promotion",
}  # fmt: skip


def test_the_public_surface_is_exactly_what_is_documented() -> None:
    assert set(bundler.api.__all__) == PUBLIC
    for name in PUBLIC:
        assert hasattr(bundler.api, name), name
        assert f"`{name}" in DOC.read_text() or name[0].isupper(), f"{name} is not in the docs"


def test_the_documented_flow_runs_as_written(helm: str, tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert len(blocks) == 2
    shutil.copytree(REPO_ROOT / "examples", tmp_path / "examples")
    script = tmp_path / "flow.py"
    script.write_text("\n".join(blocks))
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(helm).parent), os.environ["PATH"]])}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env["DOCKER_CONFIG"] = str(tmp_path / "docker")
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("packed demo 1.0.0: 4 images, sha256:")
    assert lines[1] == "approved by secops-alice; signed by ['vendor-release', 'secops-alice']"
    assert sum("-> registry.internal.example/platform/" in line for line in lines) == 4
    assert lines[-2].startswith("promotion record of sha256:")
    assert lines[-1].startswith("refused: ")
    assert "step" in lines[-1]
    assert (tmp_path / "out" / "internal" / "index.json").is_file()
