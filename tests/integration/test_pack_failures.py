"""``bundler pack`` refusing bad input: one clear line, a distinct exit code, nothing written.

Each case runs against the three kinds of target (an archive, an OCI layout directory, a real
registry) and checks that no archive or partial file, no layout directory and no registry tag
is left behind. The completeness check is also shown letting a named image through.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from copy_support import API_REF, Cli, Judge, layout_entry, layout_json, sha256_digest, unique
from harness.registry import RegistryServer, free_port
from pack_support import (
    DEMO_CHART,
    EXAMPLE_REFS,
    bundle_index_of,
    image_entries,
    layout_source,
    lock_of,
    pack_cli,
    pack_ok,
)

SNEAKY = "example.local/demo/sneaky:1.0"
SNEAKY_TEMPLATE = f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: sneaky
spec:
  selector:
    matchLabels: {{app: sneaky}}
  template:
    metadata:
      labels: {{app: sneaky}}
    spec:
      containers:
        - name: sneaky
          image: {SNEAKY}
"""


@pytest.fixture
def cli(tmp_path: Path, helm: str) -> Cli:
    return pack_cli(tmp_path / "user", helm)


@dataclass
class Scene:
    """What a case may start from: a scratch directory and the example images."""

    work: Path
    layout: Path  # shared example layout: read only
    layout_copy: Path  # this test's own copy: free to break

    def chart_copy(self) -> Path:
        dst = self.work / "chart" / "demo"
        shutil.copytree(DEMO_CHART, dst)
        return dst


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Scene], list[str]]
    code: int
    needles: tuple[str, ...]


def _missing_image(scene: Scene) -> list[str]:
    index_path = scene.layout_copy / "index.json"
    index = json.loads(index_path.read_text())
    index["manifests"] = [
        m
        for m in index["manifests"]
        if m["annotations"]["org.opencontainers.image.ref.name"] != API_REF
    ]
    index_path.write_text(json.dumps(index))
    return ["--chart", str(DEMO_CHART), *layout_source(scene.layout_copy)]


def _missing_layer(scene: Scene) -> list[str]:
    # The image resolves and its config reads fine; one layer is gone, found only mid-copy.
    manifest = layout_json(scene.layout_copy, layout_entry(scene.layout_copy, API_REF)["digest"])
    layer = manifest["layers"][-1]["digest"]
    (scene.layout_copy / "blobs" / "sha256" / layer.split(":")[1]).unlink()
    return ["--chart", str(DEMO_CHART), *layout_source(scene.layout_copy)]


def _unreachable_registry(scene: Scene) -> list[str]:
    return [
        "--chart",
        str(DEMO_CHART),
        "--mirror",
        f"example.local=127.0.0.1:{CLOSED_PORT}",
        "--no-upstream",
    ]


def _broken_chart_yaml(scene: Scene) -> list[str]:
    chart = scene.chart_copy()
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: [1.0.0\n")
    return ["--chart", str(chart), *layout_source(scene.layout)]


def _absent_value_path(scene: Scene) -> list[str]:
    return [
        "--chart",
        str(DEMO_CHART),
        *layout_source(scene.layout),
        "--value-path",
        "web.sidecar.image",
    ]


def _config_breaking_schema(scene: Scene) -> list[str]:
    scene.chart_copy()
    config = scene.work / "bundle.yaml"
    config.write_text(
        "apiVersion: bundler.dev/v1\nkind: Bundle\nmetadata:\n  name: demo\n"
        "  versoin: 2.0.0\nchart:\n  path: chart/demo\n"
    )
    return [str(config), *layout_source(scene.layout)]


def _escaping_chart_archive(scene: Scene) -> list[str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        members = [
            ("demo/Chart.yaml", (DEMO_CHART / "Chart.yaml").read_bytes()),
            ("demo/values.yaml", (DEMO_CHART / "values.yaml").read_bytes()),
            ("demo/templates/../../../escaped.txt", b"written outside the chart\n"),
        ]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive = scene.work / "evil" / "demo-1.0.0.tgz"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(raw.getvalue())
    return ["--chart", str(archive), *layout_source(scene.layout)]


def _rendered_image_no_source_has(scene: Scene) -> list[str]:
    chart = sneaky_chart(scene)
    return ["--chart", str(chart), *layout_source(scene.layout)]


def sneaky_chart(scene: Scene) -> Path:
    """The demo chart plus a Deployment running an image declared nowhere (no annotation,
    no value)."""
    chart = scene.chart_copy()
    (chart / "templates" / "sneaky.yaml").write_text(SNEAKY_TEMPLATE)
    assert "sneaky" not in (chart / "Chart.yaml").read_text()
    assert "sneaky" not in (chart / "values.yaml").read_text()
    return chart


CLOSED_PORT = free_port()

CASES = [
    Case("missing-image", _missing_image, 3, (API_REF, "not found")),
    Case("missing-layer", _missing_layer, 3, ("lacks blob",)),
    Case("unreachable-registry", _unreachable_registry, 5, (f"127.0.0.1:{CLOSED_PORT}",)),
    Case("malformed-chart-yaml", _broken_chart_yaml, 9, ("Chart.yaml", "line")),
    Case("absent-value-path", _absent_value_path, 10, ("'web.sidecar.image'",)),
    Case("config-breaks-schema", _config_breaking_schema, 10, ("metadata", "'versoin'")),
    Case("chart-archive-path-escape", _escaping_chart_archive, 8, ("escaped.txt", "escapes")),
    Case(
        "rendered-image-no-source-has",
        _rendered_image_no_source_has,
        3,
        (SNEAKY, "Deployment/sneaky", "--allow-missing"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_failed_pack_names_the_problem_and_leaves_nothing_behind(
    case: Case,
    cli: Cli,
    judge: Judge,
    plain_registry: RegistryServer,
    example_layout: Path,
    example_layout_copy: Path,
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    args = case.setup(Scene(work, example_layout, example_layout_copy))
    out = tmp_path / "out"
    out.mkdir()
    repo = f"{unique('failed')}/demo"
    targets = {
        "archive": f"archive:{out / 'demo.tar'}",
        "oci": f"oci:{out / 'layout'}",
        "registry": plain_registry.ref(f"{repo}:1.0.0"),
    }
    for kind, target in targets.items():
        res = cli("pack", *args, "--to", target)
        assert res.returncode == case.code, f"[{kind}]\n{res.describe()}"
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), f"[{kind}]\n{res.describe()}"
        for needle in case.needles:
            assert needle in lines[0], f"[{kind}] {needle!r} not in {lines[0]!r}"
        assert "Traceback" not in res.stderr
        assert res.stdout == ""
        assert sorted(p.name for p in out.iterdir()) == [], f"[{kind}] left behind"
        assert judge.tags(plain_registry, repo) == [], f"[{kind}] tagged"
        assert judge.manifest_digest(plain_registry, repo, "1.0.0") is None
    assert not list(tmp_path.rglob("escaped.txt"))


def test_failed_pack_into_an_existing_layout_adds_no_name(
    cli: Cli,
    synth: ModuleType,
    example_layout: Path,
    example_layout_copy: Path,
    tmp_path: Path,
) -> None:
    # A user's layout that already holds another image: a pack failing mid-copy names nothing
    # and leaves no partial file.
    target = tmp_path / "existing"
    synth.write_image(target, "example.local/other/tool:1.0", [synth.LayerSpec("other", 4096)])
    before = (target / "index.json").read_bytes()
    args = _missing_layer(Scene(tmp_path, example_layout, example_layout_copy))
    res = cli("pack", *args, "--to", f"oci:{target}")
    assert res.returncode == 3, res.describe()
    assert (target / "index.json").read_bytes() == before
    assert sorted(p.name for p in target.iterdir()) == ["blobs", "index.json", "oci-layout"]
    for blob in (target / "blobs" / "sha256").iterdir():
        assert sha256_digest(blob.read_bytes()) == f"sha256:{blob.name}", blob.name


def test_allow_missing_lets_a_named_image_through_and_records_it(
    cli: Cli,
    example_layout: Path,
    example_layout_copy: Path,
    tmp_path: Path,
) -> None:
    chart = sneaky_chart(Scene(tmp_path, example_layout, example_layout_copy))
    out = tmp_path / "allowed.tar"
    doc: dict[str, Any] = pack_ok(
        cli,
        "--chart",
        chart,
        *layout_source(example_layout),
        "--allow-missing",
        SNEAKY,
        "--to",
        f"archive:{out}",
    )
    assert doc["completeness"]["rendered"] is True
    lock = lock_of(cli, f"archive:{out}")
    assert lock["completeness"]["rendered"] is True
    assert lock["completeness"]["allowedMissing"] == [SNEAKY]
    assert [i["reference"] for i in lock["images"]] == sorted(EXAMPLE_REFS)
    assert set(image_entries(bundle_index_of(out))) == set(EXAMPLE_REFS)
