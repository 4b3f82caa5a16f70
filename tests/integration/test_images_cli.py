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


def images_of(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {image["reference"]: image for image in doc["images"]}


def test_example_chart_images_with_sources_and_value_paths(cli: Cli) -> None:
    res = cli("images", DEMO, "-o", "json")
    assert res.returncode == 0, res.describe()
    doc = res.json
    assert doc["chart"] == {"name": "demo", "version": "1.0.0"}
    assert doc["rendered"] is True
    images = images_of(doc)
    assert set(images) == {WEB, API, WORKER, MIGRATE}
    for image in images.values():
        assert image["rendered"] is True
        assert set(image["foundBy"]) == {"annotation", "template", "values"}
    # The values that compose each image, found by rendering the chart with them changed.
    paths = {ref: [(v["path"], v["form"]) for v in i["valuePaths"]] for ref, i in images.items()}
    assert paths == {
        WEB: [
            ("web.image.registry", "registry"),
            ("web.image.repository", "repository"),
            ("web.image.tag", "tag"),
        ],
        API: [("api.image", "reference")],
        MIGRATE: [("api.migrate.image", "reference")],
        WORKER: [("worker.image.repository", "repository"), ("worker.image.tag", "tag")],
    }
    [web_use] = images[WEB]["uses"]
    assert web_use["where"] == "Deployment/bundle-demo-web container web"
    assert web_use["composition"] == ("{web.image.registry}/{web.image.repository}:{web.image.tag}")
    assert sorted(u["where"] for u in images[WORKER]["uses"]) == [
        "CronJob/bundle-demo-report container report",
        "Deployment/bundle-worker container worker",
    ]
    assert doc["disabled"] == [] and doc["warnings"] == []


def test_values_file_changes_what_renders(cli: Cli, tmp_path: Path) -> None:
    override = tmp_path / "override.yaml"
    override.write_text("web:\n  image:\n    tag: '2.0.0'\n")
    res = cli("images", DEMO, "-o", "json", "--values", override)
    assert res.returncode == 0, res.describe()
    images = images_of(res.json)
    assert images["example.local/demo/web:2.0.0"]["foundBy"] == ["template"]
    # 1.0.0 no longer runs; the chart's helm.sh/images annotation still names it
    assert images[WEB]["rendered"] is False
    assert images[WEB]["foundBy"] == ["annotation", "values"]


def test_set_changes_what_renders_as_helm_parses_it(cli: Cli) -> None:
    res = cli("images", DEMO, "-o", "json", "--set", "web.image.tag=2.1.0")
    assert res.returncode == 0, res.describe()
    assert "example.local/demo/web:2.1.0" in images_of(res.json)


def test_no_render_lists_what_values_and_annotations_name(cli: Cli) -> None:
    res = cli("images", DEMO, "-o", "json", "--no-render")
    assert res.returncode == 0, res.describe()
    assert res.json["rendered"] is False
    images = images_of(res.json)
    assert set(images) == {WEB, API, WORKER, MIGRATE}
    assert not any(i["rendered"] for i in images.values())
    assert images[WEB]["valuePaths"] == [{"path": "web.image", "form": "map"}]


def test_text_list_is_one_pasteable_line_per_image(cli: Cli) -> None:
    res = cli("images", DEMO, "--value-path", "api.migrate.image")
    assert res.returncode == 0, res.describe()
    lines = res.stdout.splitlines()
    assert [line.split("  # ")[0] for line in lines] == sorted([WEB, API, WORKER, MIGRATE])
    [migrate] = [line for line in lines if line.startswith(MIGRATE)]
    assert "runs in Deployment/bundle-demo-api initContainer migrate" in migrate
    assert "values api.migrate.image" in migrate
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
