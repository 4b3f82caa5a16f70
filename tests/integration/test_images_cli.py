"""``bundler images`` on the example chart with the real Helm, run the way a user runs it."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from copy_support import Cli

from bundler.adapters.chart import package_chart_dir
from bundler.adapters.helm import find_helm

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO = REPO_ROOT / "examples" / "chart" / "demo"
WEB = "example.local/demo/web:1.0.0"
API = "example.local/demo/api:1.0.0"
WORKER = "example.local/demo/worker:1.0.0"
MIGRATE = "example.local/demo/migrate:1.0.0"


@pytest.fixture(scope="module")
def helm_bin() -> str:
    local = REPO_ROOT / ".tools" / "bin" / "helm"
    found = str(local) if os.access(local, os.X_OK) else find_helm()
    if found is None:
        pytest.skip("helm not found ($BUNDLER_HELM, PATH or .tools/bin/helm)")
    return found


@pytest.fixture
def cli(tmp_path: Path, helm_bin: str) -> Cli:
    runner = Cli(tmp_path / "user")
    runner.env["BUNDLER_HELM"] = helm_bin
    return runner


def by(doc: dict[str, Any], source: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for image in doc["images"]:
        if image["source"] == source:
            out.setdefault(image["reference"], []).append(image)
    return out


def test_example_chart_images_with_sources_and_value_paths(cli: Cli) -> None:
    res = cli("images", DEMO, "-o", "json")
    assert res.returncode == 0, res.describe()
    doc = res.json
    assert doc["chart"] == {"name": "demo", "version": "1.0.0"}
    assert doc["rendered"] is True
    assert {i["reference"] for i in doc["images"]} == {WEB, API, WORKER, MIGRATE}

    assert set(by(doc, "annotation")) == {WEB, API, WORKER, MIGRATE}

    values = {
        ref: [(i["valuePath"], i["valueForm"]) for i in found]
        for ref, found in by(doc, "values").items()
    }
    assert values == {
        WEB: [("web.image", "map")],
        API: [("api.image", "string")],
        MIGRATE: [("api.migrate.image", "string")],
        WORKER: [("worker.image", "map")],
    }
    [web_value] = by(doc, "values")[WEB]
    assert web_value["written"] == "example.local/demo/web"  # empty tag: the appVersion
    [worker_value] = by(doc, "values")[WORKER]
    assert worker_value["detail"] == "values.yaml of subchart worker"

    rendered = {
        ref: sorted(i["detail"] for i in found) for ref, found in by(doc, "template").items()
    }
    assert rendered == {
        WEB: ["Deployment/bundle-demo-web container web"],
        API: ["Deployment/bundle-demo-api container api"],
        MIGRATE: ["Deployment/bundle-demo-api initContainer migrate"],
        WORKER: [
            "CronJob/bundle-demo-report container report",
            "Deployment/bundle-worker container worker",
        ],
    }
    # What values promise is what the templates run.
    assert set(by(doc, "template")) == set(by(doc, "values"))


def test_values_file_changes_what_renders(cli: Cli, tmp_path: Path) -> None:
    override = tmp_path / "override.yaml"
    override.write_text("web:\n  image:\n    tag: '2.0.0'\n")
    res = cli("images", DEMO, "-o", "json", "--values", override)
    assert res.returncode == 0, res.describe()
    assert "example.local/demo/web:2.0.0" in by(res.json, "template")


def test_no_render_skips_templates(cli: Cli) -> None:
    res = cli("images", DEMO, "-o", "json", "--no-render")
    assert res.returncode == 0, res.describe()
    assert res.json["rendered"] is False
    assert by(res.json, "template") == {}
    assert set(by(res.json, "values")) == {WEB, API, WORKER, MIGRATE}


def test_text_table_and_value_path(cli: Cli) -> None:
    res = cli("images", DEMO, "--value-path", "api.migrate.image")
    assert res.returncode == 0, res.describe()
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["REFERENCE", "SOURCE", "VALUE", "PATH", "DETAIL"]
    assert any(line.split()[:3] == [MIGRATE, "config", "api.migrate.image"] for line in lines)
    assert "4 images in demo 1.0.0" in res.stderr


def test_packed_archive_gives_the_same_findings(cli: Cli, tmp_path: Path) -> None:
    archive = tmp_path / "demo-1.0.0.tgz"
    archive.write_bytes(package_chart_dir(DEMO))
    from_dir = cli("images", DEMO, "-o", "json").json
    from_tgz = cli("images", archive, "-o", "json").json
    assert from_tgz == from_dir


def test_helm_lint_accepts_the_packed_archive(helm_bin: str, tmp_path: Path) -> None:
    archive = tmp_path / "demo-1.0.0.tgz"
    archive.write_bytes(package_chart_dir(DEMO))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    for argv in ([helm_bin, "lint", str(archive)], [helm_bin, "template", "x", str(archive)]):
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        assert proc.returncode == 0, proc.stderr


# -- failures and their exit codes ----------------------------------------------------------


def test_malformed_chart_yaml_exits_9(cli: Cli, tmp_path: Path) -> None:
    chart = tmp_path / "demo"
    shutil.copytree(DEMO, chart)
    text = (chart / "Chart.yaml").read_text().replace("version: 1.0.0", "version: one")
    (chart / "Chart.yaml").write_text(text)
    res = cli("images", chart)
    assert res.returncode == 9, res.describe()
    assert "version 'one' is not semantic versioning" in res.stderr
    assert len(res.stderr.splitlines()) == 1


def test_template_that_fails_to_render_exits_9(cli: Cli, tmp_path: Path) -> None:
    chart = tmp_path / "demo"
    shutil.copytree(DEMO, chart)
    (chart / "templates" / "broken.yaml").write_text('{{ fail "no database configured" }}\n')
    res = cli("images", chart)
    assert res.returncode == 9, res.describe()
    assert "helm template" in res.stderr and "no database configured" in res.stderr


def test_missing_value_path_exits_10(cli: Cli) -> None:
    res = cli("images", DEMO, "--value-path", "web.sidecar.image", "--no-render")
    assert res.returncode == 10, res.describe()
    assert "'web.sidecar.image' does not exist" in res.stderr


def test_archive_with_dot_dot_member_exits_8(cli: Cli, tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in (
            ("demo/Chart.yaml", b"apiVersion: v2\nname: demo\nversion: 1.0.0\n"),
            ("demo/../../escape.txt", b"gotcha"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    evil = tmp_path / "evil.tgz"
    evil.write_bytes(gzip.compress(raw.getvalue()))
    res = cli("images", evil)
    assert res.returncode == 8, res.describe()
    assert "demo/../../escape.txt" in res.stderr
    assert not (tmp_path.parent / "escape.txt").exists()
