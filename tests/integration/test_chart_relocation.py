"""Small charts of our own, one per way a chart can name an image, packed and promoted for real.

Each chart is rendered by the real Helm binary; the promoted chart is pulled from a real
registry and rendered again by Helm, which is the judge of what it runs.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from copy_support import Cli, Result
from harness.registry import RegistryServer, start_registry
from pack_support import Helm, pack_cli, rendered_images, stand_ins
from transfer_support import ok

PASS_VAR = "BUNDLER_TEST_PASSPHRASE"
PASSPHRASE = "small-charts"

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
        - name: {name}
          image: {image}
"""


@pytest.fixture(scope="module")
def internal(
    registry_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryServer]:
    server = start_registry("plain", tmp_path_factory.mktemp("internal"), binary=registry_binary)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def scli(helm: str, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    cli = pack_cli(tmp_path_factory.mktemp("small-charts") / "user", helm)
    cli.env[PASS_VAR] = PASSPHRASE
    return cli


@pytest.fixture(scope="module")
def keys(scli: Cli, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("small-chart-keys")
    for name in ("vendor", "promoter"):
        ok(scli("keys", "generate", directory / name, "--passphrase-env", PASS_VAR))
    return directory


def make_chart(
    root: Path, values: dict[str, Any], templates: dict[str, str], annotations: str = ""
) -> Path:
    chart = root / "app"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: app\nversion: 0.3.0\nappVersion: '2.0.1'\n" + annotations
    )
    (chart / "values.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    for name, text in templates.items():
        (chart / "templates" / name).parent.mkdir(parents=True, exist_ok=True)
        (chart / "templates" / name).write_text(text)
    return chart


@dataclass
class World:
    cli: Cli
    keys: Path
    registry: RegistryServer
    helm: Helm
    synth: ModuleType
    tmp: Path

    def stand_ins(self, chart: Path, *flags: str) -> list[str]:
        listed = ok(self.cli("images", chart, *flags, "-o", "json"))
        return stand_ins(self.synth, self.tmp / "layout", json.loads(listed.stdout)["images"])

    def pack(self, chart: Path, *flags: str) -> Result:
        return self.cli(
            "pack",
            "--chart",
            chart,
            "--to",
            f"oci:{self.tmp / 'bundle'}",
            "--source",
            f"oci:{self.tmp / 'layout'}",
            "--no-upstream",
            *flags,
            "-o",
            "json",
        )

    def promote(self, *flags: str | Path) -> tuple[Result, str]:
        ok(
            self.cli(
                "sign",
                f"oci:{self.tmp / 'bundle'}",
                "--key",
                self.keys / "vendor.key",
                "--passphrase-env",
                PASS_VAR,
            )
        )
        policy = self.tmp / "policy.yaml"
        policy.write_text(
            "apiVersion: bundler.dev/v1\nkind: TrustPolicy\nkeys:\n"
            f"  - name: vendor\n    role: vendor\n    path: {self.keys / 'vendor.pub'}\n"
            "bundles:\n  - name: app\n    require:\n      - role: vendor\n"
        )
        prefix = f"apps-{uuid.uuid4().hex[:8]}"
        res = self.cli(
            "promote",
            f"oci:{self.tmp / 'bundle'}",
            "--to",
            self.registry.ref(prefix),
            "--policy",
            policy,
            "--key",
            self.keys / "promoter.key",
            "--passphrase-env",
            PASS_VAR,
            "-o",
            "json",
            *flags,
        )
        return res, prefix

    def promoted_render(self, prefix: str, *flags: str) -> set[str]:
        pulled = self.tmp / f"pulled-{prefix}"
        pulled.mkdir()
        self.helm(
            "pull",
            f"oci://{self.registry.ref(prefix)}/app",
            "--version",
            "0.3.0",
            "--plain-http",
            "-d",
            pulled,
        )
        return rendered_images(self.helm("template", "rel", pulled / "app-0.3.0.tgz", *flags))

    def tags(self, prefix: str) -> list[str]:
        import requests

        resp = requests.get(f"{self.registry.url}/v2/_catalog", timeout=30)
        return [r for r in resp.json()["repositories"] if r.startswith(prefix)]


@pytest.fixture
def world(
    scli: Cli,
    keys: Path,
    internal: RegistryServer,
    helm: str,
    synth: ModuleType,
    tmp_path: Path,
) -> World:
    return World(scli, keys, internal, Helm(helm, tmp_path / "judge"), synth, tmp_path)


def internal_only(world: World, prefix: str, runs: set[str]) -> None:
    base = world.registry.ref(prefix) + "/"
    assert runs
    for ref in runs:
        assert ref.startswith(base) and "@sha256:" in ref, ref


def test_a_literal_in_a_template_is_relocated_in_the_template(world: World) -> None:
    chart = make_chart(
        world.tmp,
        {"web": {"image": {"repository": "example.local/acme/web", "tag": ""}}},
        {
            "web.yaml": DEPLOYMENT.format(
                name="web",
                image='"{{ .Values.web.image.repository }}:{{ .Values.web.image.tag '
                '| default .Chart.AppVersion }}"',
            ),
            "debug.yaml": DEPLOYMENT.format(name="debug", image="busybox:1.36"),
        },
    )
    flags = world.stand_ins(chart)
    packed = world.pack(chart, *flags)
    assert packed.returncode == 0, packed.describe()
    assert {i["reference"] for i in packed.json["images"]} == {
        "docker.io/library/busybox:1.36",
        "example.local/acme/web:2.0.1",
    }
    res, prefix = world.promote()
    assert res.returncode == 0, res.describe()
    how = {r["source"]: r["how"] for r in res.json["relocations"]}
    assert how["docker.io/library/busybox:1.36"] == [
        "Deployment/debug container debug: literal in templates/debug.yaml"
    ]
    assert "values web.image.repository, web.image.tag" in how["example.local/acme/web:2.0.1"][0]
    internal_only(world, prefix, world.promoted_render(prefix))


def test_a_reference_neither_values_nor_a_literal_can_relocate_is_refused(world: World) -> None:
    chart = make_chart(
        world.tmp,
        {"tools": {"tag": "1.36"}},
        {
            "tools.yaml": DEPLOYMENT.format(
                name="tools", image='"docker.io/library/busybox:{{ .Values.tools.tag }}"'
            )
        },
    )
    packed = world.pack(chart, *world.stand_ins(chart))
    assert packed.returncode == 0, packed.describe()
    res, prefix = world.promote()
    assert res.returncode == 15, res.describe()
    assert "docker.io/library/busybox:1.36" in res.stderr
    assert "no value controls" in res.stderr
    assert "--mirror-mode" in res.stderr
    assert world.tags(prefix) == []  # nothing was written


def test_values_the_bundle_was_not_checked_with_are_refused_at_promote(world: World) -> None:
    chart = make_chart(
        world.tmp,
        {"image": "example.local/acme/app:1.0", "debug": False},
        {
            "app.yaml": DEPLOYMENT.format(name="app", image="{{ .Values.image }}"),
            "debug.yaml": "{{- if .Values.debug }}\n"
            + DEPLOYMENT.format(name="debug", image="example.local/acme/debug:1.0")
            + "{{- end }}\n",
        },
    )
    packed = world.pack(chart, *world.stand_ins(chart))
    assert packed.returncode == 0, packed.describe()
    assert [i["reference"] for i in packed.json["images"]] == ["example.local/acme/app:1.0"]
    res, prefix = world.promote("--set", "debug=true")
    assert res.returncode == 15, res.describe()
    assert "example.local/acme/debug:1.0" in res.stderr and "Deployment/debug" in res.stderr
    assert world.tags(prefix) == []


def test_values_given_at_pack_are_what_the_promoted_chart_renders(world: World) -> None:
    chart = make_chart(
        world.tmp,
        {"image": "example.local/acme/app:1.0", "debug": False},
        {
            "app.yaml": DEPLOYMENT.format(name="app", image="{{ .Values.image }}"),
            "debug.yaml": "{{- if .Values.debug }}\n"
            + DEPLOYMENT.format(name="debug", image="example.local/acme/debug:1.0")
            + "{{- end }}\n",
        },
    )
    packed = world.pack(
        chart, "--set", "debug=true", *world.stand_ins(chart, "--set", "debug=true")
    )
    assert packed.returncode == 0, packed.describe()
    assert len(packed.json["images"]) == 2
    res, prefix = world.promote()
    assert res.returncode == 0, res.describe()
    runs = world.promoted_render(prefix)
    assert len(runs) == 2  # debug=true was recorded in the lock and went into the chart
    internal_only(world, prefix, runs)


def test_kube_version_given_at_pack_is_the_one_promote_renders_with(world: World) -> None:
    chart = make_chart(
        world.tmp,
        {"kubectl": {"image": {"repository": "example.local/tools/kubectl", "tag": ""}}},
        {
            "job.yaml": DEPLOYMENT.format(
                name="kubectl",
                image='"{{ .Values.kubectl.image.repository }}:{{ .Values.kubectl.image.tag '
                '| default .Capabilities.KubeVersion.Version }}"',
            )
        },
    )
    flags = ["--kube-version", "1.29.3"]
    packed = world.pack(chart, *flags, *world.stand_ins(chart, *flags))
    assert packed.returncode == 0, packed.describe()
    assert [i["reference"] for i in packed.json["images"]] == [
        "example.local/tools/kubectl:v1.29.3"
    ]
    res, prefix = world.promote()
    assert res.returncode == 0, res.describe()
    internal_only(world, prefix, world.promoted_render(prefix, "--kube-version", "1.29.3"))


def test_malformed_entries_are_warnings_and_disabled_images_stay_out(world: World) -> None:
    chart = make_chart(
        world.tmp,
        {
            "image": "example.local/acme/app:1.0",
            "templated": {"image": {"repository": "{{ .Values.x }}", "tag": "1"}},
            "nested": {"image": {"repository": "example.local/acme/n", "tag": {"a": 1}}},
            "metrics": {"enabled": False, "image": "example.local/acme/metrics:3.0"},
        },
        {"app.yaml": DEPLOYMENT.format(name="app", image="{{ .Values.image }}")},
        annotations="annotations:\n  helm.sh/images: |\n"
        "    - {name: bad, image: 'MyOrg/Tool:1.0'}\n"
        "    - {name: tpl, image: '{{ .Values.image }}'}\n",
    )
    flags = world.stand_ins(chart, "--include-disabled")
    packed = world.pack(chart, *flags)
    assert packed.returncode == 0, packed.describe()
    assert [i["reference"] for i in packed.json["images"]] == ["example.local/acme/app:1.0"]
    warnings = packed.json["warnings"]
    for needle in ("MyOrg/Tool:1.0", "'templated.image'", "'nested.image'", "{{ .Values.image }}"):
        assert any(needle in w for w in warnings), (needle, warnings)
    text = world.pack(chart, *flags, "--include-disabled")
    assert text.returncode == 0, text.describe()
    assert sorted(i["reference"] for i in text.json["images"]) == [
        "example.local/acme/app:1.0",
        "example.local/acme/metrics:3.0",
    ]


def test_every_image_no_source_has_is_named_at_once(world: World) -> None:
    chart = make_chart(
        world.tmp,
        {"a": "example.local/acme/a:1", "b": "example.local/acme/b:1"},
        {
            "a.yaml": DEPLOYMENT.format(name="a", image="{{ .Values.a }}"),
            "b.yaml": DEPLOYMENT.format(name="b", image="{{ .Values.b }}"),
        },
    )
    world.synth.write_image(
        world.tmp / "layout",
        "example.local/acme/other:1",
        [world.synth.LayerSpec(seed="o", size=64)],
    )
    res = world.pack(chart)
    assert res.returncode == 3, res.describe()
    line = res.error_line
    assert "2 image(s)" in line
    assert "example.local/acme/a:1" in line and "Deployment/a container a" in line
    assert "example.local/acme/b:1" in line and "Deployment/b container b" in line
    assert "--allow-missing" in line
    assert not (world.tmp / "bundle").exists()


def test_skip_tests_leaves_the_images_of_chart_tests_out(world: World) -> None:
    chart = make_chart(
        world.tmp,
        {"image": "example.local/acme/app:1.0"},
        {
            "app.yaml": DEPLOYMENT.format(name="app", image="{{ .Values.image }}"),
            "tests/check.yaml": "apiVersion: v1\nkind: Pod\nmetadata:\n  name: check\n"
            "  annotations: {helm.sh/hook: test}\nspec:\n  containers:\n"
            "    - {name: bats, image: example.local/tools/bats:1.11}\n",
        },
    )
    listed = ok(world.cli("images", chart))
    assert "example.local/tools/bats:1.11  # runs in Pod/check container bats (hook test)" in (
        listed.stdout
    )
    packed = world.pack(chart, "--skip-tests", *world.stand_ins(chart))
    assert packed.returncode == 0, packed.describe()
    assert [i["reference"] for i in packed.json["images"]] == ["example.local/acme/app:1.0"]
    res, prefix = world.promote()
    assert res.returncode == 0, res.describe()  # the proof renders without tests too
    internal_only(world, prefix, world.promoted_render(prefix, "--skip-tests"))
