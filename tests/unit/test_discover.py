"""Image discovery: each value shape, subchart prefixes and overrides, annotations, explicit
value paths, and container images in rendered manifests (without helm)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bundler.adapters.chart import Chart, load_chart_dir
from bundler.adapters.helm import find_helm
from bundler.errors import ChartError, ConfigError, UsageError
from bundler.services.discover import (
    ImageFinding,
    discover,
    images_from_annotations,
    images_from_value_paths,
    images_from_values,
    resolve_value,
)
from bundler.services.rendered import scan

DIGEST = "sha256:" + "ab" * 32


def make_chart(
    root: Path,
    values: str,
    *,
    name: str = "app",
    app_version: str = "2.0",
    extra_chart_yaml: str = "",
    files: dict[str, str] | None = None,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Chart.yaml").write_text(
        f"apiVersion: v2\nname: {name}\nversion: 1.0.0\nappVersion: '{app_version}'\n"
        + extra_chart_yaml
    )
    (root / "values.yaml").write_text(values)
    for path, text in (files or {}).items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def load(tmp_path: Path, values: str, **kw: object) -> Chart:
    return load_chart_dir(make_chart(tmp_path / "app", values, **kw))  # type: ignore[arg-type]


def found(findings: list[ImageFinding]) -> list[tuple[str | None, str, str | None]]:
    return [(f.value_path, f.reference, f.value_form) for f in findings]


# -- value shapes ---------------------------------------------------------------------------


def test_string_image(tmp_path: Path) -> None:
    chart = load(tmp_path, "web:\n  image: nginx:1.25\n  pullPolicy: Always\n")
    [finding] = images_from_values(chart)
    assert finding == ImageFinding(
        "docker.io/library/nginx:1.25",
        "nginx:1.25",
        "values",
        "web.image",
        "string",
        "values.yaml of chart app",
    )


def test_keys_ending_in_image(tmp_path: Path) -> None:
    chart = load(tmp_path, "initImage: busybox:1.36\nsidecarImage: example.local/s:1\n")
    assert found(images_from_values(chart)) == [
        ("initImage", "docker.io/library/busybox:1.36", "string"),
        ("sidecarImage", "example.local/s:1", "string"),
    ]


def test_bitnami_map_with_registry(tmp_path: Path) -> None:
    chart = load(
        tmp_path,
        "db:\n  image:\n    registry: docker.io\n    repository: bitnami/pg\n"
        "    tag: 16.1.0\n    pullPolicy: IfNotPresent\n",
    )
    [finding] = images_from_values(chart)
    assert (finding.value_path, finding.reference, finding.written, finding.value_form) == (
        "db.image",
        "docker.io/bitnami/pg:16.1.0",
        "docker.io/bitnami/pg:16.1.0",
        "map",
    )


def test_repository_and_tag_map(tmp_path: Path) -> None:
    chart = load(tmp_path, "image:\n  repository: example.local/app\n  tag: '1.0'\n")
    assert found(images_from_values(chart)) == [("image", "example.local/app:1.0", "map")]


def test_name_and_tag_map(tmp_path: Path) -> None:
    chart = load(tmp_path, "proxy:\n  image:\n    name: example.local/proxy\n    tag: '3'\n")
    assert found(images_from_values(chart)) == [("proxy.image", "example.local/proxy:3", "map")]


def test_image_and_tag_siblings(tmp_path: Path) -> None:
    chart = load(tmp_path, "exporter:\n  image: example.local/exporter\n  tag: '0.9'\n")
    assert found(images_from_values(chart)) == [("exporter", "example.local/exporter:0.9", "map")]


def test_empty_tag_means_app_version(tmp_path: Path) -> None:
    chart = load(
        tmp_path, "image:\n  repository: example.local/app\n  tag: ''\n", app_version="3.1.4"
    )
    [finding] = images_from_values(chart)
    assert finding.reference == "example.local/app:3.1.4"
    assert finding.written == "example.local/app"


def test_digest_wins_over_tag(tmp_path: Path) -> None:
    chart = load(
        tmp_path, f"image:\n  repository: example.local/app\n  tag: '1'\n  digest: {DIGEST}\n"
    )
    [finding] = images_from_values(chart)
    assert finding.reference == f"example.local/app@{DIGEST}"


def test_string_with_digest(tmp_path: Path) -> None:
    chart = load(tmp_path, f"image: example.local/app:1@{DIGEST}\n")
    assert found(images_from_values(chart)) == [
        ("image", f"example.local/app:1@{DIGEST}", "string")
    ]


def test_images_in_lists(tmp_path: Path) -> None:
    chart = load(tmp_path, "sidecars:\n  - name: a\n    image: example.local/a:1\n")
    assert found(images_from_values(chart)) == [
        ("sidecars[0].image", "example.local/a:1", "string")
    ]


@pytest.mark.parametrize(
    "values",
    [
        "image: nginx\n",  # no tag, no slash: not clearly an image
        "pullPolicy: IfNotPresent\n",
        "image:\n  pullPolicy: Always\n",
        "git:\n  repository: https://example.local/repo.git\n",  # not under an image key
        "imageName: UPPER/Case:1\n",
    ],
)
def test_values_that_are_not_images_are_skipped(tmp_path: Path, values: str) -> None:
    assert images_from_values(load(tmp_path, values)) == []


def test_bad_repository_map_is_a_warning_naming_the_path(tmp_path: Path) -> None:
    chart = load(
        tmp_path,
        "web:\n  image:\n    repository: Not/Valid\n    tag: '1'\n"
        "api:\n  image: example.local/api:1\n",
    )
    warnings: list[str] = []
    assert [f.reference for f in images_from_values(chart, warnings)] == ["example.local/api:1"]
    [warning] = warnings
    assert "'web.image'" in warning and "skipped" in warning


# -- subcharts --------------------------------------------------------------------------------


def test_subchart_values_under_alias_with_parent_override(tmp_path: Path) -> None:
    root = make_chart(
        tmp_path / "app",
        "cache:\n  image:\n    tag: '7.2'\n"
        "worker:\n  enabled: true\n"
        "global:\n  image: example.local/global-tool:1\n",
        extra_chart_yaml="dependencies:\n  - {name: redis, alias: cache}\n  - {name: worker}\n",
        files={
            "charts/redis/Chart.yaml": "apiVersion: v2\nname: redis\nversion: 1.0.0\n"
            "appVersion: '7.0'\n",
            "charts/redis/values.yaml": "image:\n  repository: example.local/redis\n  tag: '7.0'\n",
            "charts/worker/Chart.yaml": "apiVersion: v2\nname: worker\nversion: 1.0.0\n"
            "appVersion: '5.5'\n",
            "charts/worker/values.yaml": "image:\n  repository: example.local/worker\n"
            "  tag: ''\nglobal:\n  image: example.local/x:1\n",
        },
    )
    findings = images_from_values(load_chart_dir(root))
    assert [(f.value_path, f.reference, f.detail) for f in findings] == [
        ("global.image", "example.local/global-tool:1", "values.yaml of chart app"),
        (
            "cache.image",
            "example.local/redis:7.2",
            "values.yaml of subchart cache (overridden by a parent chart)",
        ),
        ("worker.image", "example.local/worker:5.5", "values.yaml of subchart worker"),
    ]


# -- annotations ------------------------------------------------------------------------------

ANNOTATION = (
    "annotations:\n  helm.sh/images: |\n    - name: web\n      image: example.local/web:1\n"
    "      platforms: [linux/amd64]\n    - name: db\n      image: postgres:16\n"
)


def test_helm_images_annotation(tmp_path: Path) -> None:
    findings = images_from_annotations(load(tmp_path, "", extra_chart_yaml=ANNOTATION))
    assert [(f.reference, f.written, f.detail) for f in findings] == [
        ("example.local/web:1", "example.local/web:1", "Chart.yaml annotation helm.sh/images"),
        ("docker.io/library/postgres:16", "postgres:16", "Chart.yaml annotation helm.sh/images"),
    ]


def test_artifacthub_annotation_in_subchart(tmp_path: Path) -> None:
    root = make_chart(
        tmp_path / "app",
        "",
        files={
            "charts/sub/Chart.yaml": "apiVersion: v2\nname: sub\nversion: 1.0.0\nannotations:\n"
            "  artifacthub.io/images: '[{name: s, image: example.local/s:2}]'\n",
        },
    )
    [finding] = images_from_annotations(load_chart_dir(root))
    assert finding.reference == "example.local/s:2"
    assert finding.detail == "Chart.yaml of subchart sub annotation artifacthub.io/images"


@pytest.mark.parametrize("text", ["'{a: b}'", "'[{name: x}]'", "'[{image: Bad:Ref:1}]'", "'[a'"])
def test_malformed_annotation_is_a_warning_not_an_abort(tmp_path: Path, text: str) -> None:
    chart = load(
        tmp_path,
        "",
        extra_chart_yaml=f"annotations:\n  helm.sh/images: {text}\n"
        "  artifacthub.io/images: '[{name: ok, image: example.local/ok:1}]'\n",
    )
    warnings: list[str] = []
    found = images_from_annotations(chart, warnings=warnings)
    assert [f.reference for f in found] == ["example.local/ok:1"]
    assert warnings and all("helm.sh/images" in w for w in warnings)


def test_annotation_condition_is_honoured(tmp_path: Path) -> None:
    chart = load(
        tmp_path,
        "metrics:\n  enabled: false\nweb:\n  enabled: true\n",
        extra_chart_yaml="annotations:\n  helm.sh/images: |\n"
        "    - {name: m, image: example.local/m:1, condition: metrics.enabled}\n"
        "    - {name: w, image: example.local/w:1, condition: 'absent.path,web.enabled'}\n"
        "    - {name: x, image: example.local/x:1, condition: no.such.path}\n",
    )
    found = [f.reference for f in images_from_annotations(chart)]
    assert found == ["example.local/w:1", "example.local/x:1"]
    on = [f.reference for f in images_from_annotations(chart, {"metrics": {"enabled": True}})]
    assert "example.local/m:1" in on


# -- explicit value paths ----------------------------------------------------------------------

VALUES = (
    "app:\n  sidecar:\n    ref: example.local/side:1\n  proxy:\n    repository: "
    "example.local/proxy\n  list:\n    - example.local/l:1\n  port: 80\n"
)


@pytest.mark.parametrize("path", ["app.list[0]", "app.list.0"])
def test_resolve_value_with_list_indexes(tmp_path: Path, path: str) -> None:
    assert resolve_value(load(tmp_path, VALUES).values, path) == "example.local/l:1"


def test_explicit_value_paths(tmp_path: Path) -> None:
    chart = load(tmp_path, VALUES)
    findings = images_from_value_paths(chart, ["app.sidecar.ref", "app.proxy"])
    assert [(f.source, f.value_path, f.reference, f.value_form) for f in findings] == [
        ("config", "app.sidecar.ref", "example.local/side:1", "string"),
        ("config", "app.proxy", "example.local/proxy:2.0", "map"),
    ]


def test_explicit_value_path_into_subchart_defaults(tmp_path: Path) -> None:
    root = make_chart(
        tmp_path / "app",
        "",
        files={
            "charts/sub/Chart.yaml": "apiVersion: v2\nname: sub\nversion: 1.0.0\nappVersion: '4'\n",
            "charts/sub/values.yaml": "odd:\n  repository: example.local/odd\n",
        },
    )
    [finding] = images_from_value_paths(load_chart_dir(root), ["sub.odd"])
    assert finding.reference == "example.local/odd:4"  # the subchart's appVersion


@pytest.mark.parametrize("path", ["app.missing", "app.list[3]", "nothing", "app.port.x"])
def test_missing_value_path_is_a_config_error_naming_it(tmp_path: Path, path: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"value path '{path}' does not exist")):
        images_from_value_paths(load(tmp_path, VALUES), [path])


@pytest.mark.parametrize("path", ["app.port", "app"])
def test_value_path_that_is_not_an_image_is_a_config_error(tmp_path: Path, path: str) -> None:
    with pytest.raises(ConfigError, match=f"value path '{path}'"):
        images_from_value_paths(load(tmp_path, VALUES), [path])


def test_malformed_value_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"malformed"):
        images_from_value_paths(load(tmp_path, VALUES), ["app..x"])


# -- rendered manifests ------------------------------------------------------------------------

MANIFESTS = """\
---
# Source: app/templates/deploy.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app-web
spec:
  template:
    spec:
      initContainers:
        - name: migrate
          image: example.local/migrate:1
      containers:
        - name: web
          image: "example.local/web:1"
        - name: proxy
          image: envoyproxy/envoy:v1.30
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: app-report
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers:
            - name: report
              image: example.local/worker:1
---
apiVersion: v1
kind: Pod
metadata:
  name: debug
spec:
  containers: [{name: main, image: busybox}]
  ephemeralContainers: [{name: dbg, image: "example.local/debug@DIGEST"}]
---
apiVersion: example.local/v1
kind: Runner
metadata:
  name: custom
spec:
  deep:
    containers:
      - name: runner
        image: example.local/runner:2
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
data:
  image: not-a-container
---
""".replace("@DIGEST", "@" + DIGEST)


def test_scan_finds_every_container_list() -> None:
    found = scan(MANIFESTS)
    assert [(i.reference, i.where) for i in found.images] == [
        ("example.local/migrate:1", "Deployment/app-web initContainer migrate"),
        ("example.local/web:1", "Deployment/app-web container web"),
        ("docker.io/envoyproxy/envoy:v1.30", "Deployment/app-web container proxy"),
        ("example.local/worker:1", "CronJob/app-report container report"),
        ("docker.io/library/busybox:latest", "Pod/debug container main"),
        (f"example.local/debug@{DIGEST}", "Pod/debug ephemeralContainer dbg"),
        ("example.local/runner:2", "Runner/custom container runner"),
    ]
    assert found.images[4].written == "busybox"
    assert found.warnings == []


def test_scan_finds_images_outside_containers_but_not_words_or_urls() -> None:
    text = """
kind: Deployment
metadata: {name: ctl, annotations: {helm.sh/hook: post-install}}
spec:
  template:
    spec:
      containers:
        - name: c
          image: quay.io/x/ctl:v1
          args:
            - --solver-image=quay.io/x/solver:v1
            - --docs=https://quay.io/x/solver:v1
            - --name=example.local
---
kind: Prometheus
metadata: {name: p}
spec:
  image: quay.io/prometheus/prometheus:v3.0.0
  version: v3.0.0
---
kind: ConfigMap
metadata: {name: cfg}
data:
  config.yaml: |
    sidecar: registry.example:5000/tools/sidecar:2.1 # pinned
    words: not an image, just text
"""
    found = scan(text)
    assert [(i.reference, i.kind, i.hook) for i in found.images] == [
        ("quay.io/x/ctl:v1", "container", "post-install"),
        ("quay.io/x/solver:v1", "embedded", "post-install"),
        ("quay.io/prometheus/prometheus:v3.0.0", "field", None),
        ("registry.example:5000/tools/sidecar:2.1", "embedded", None),
    ]
    solver = found.images[1]
    assert solver.text[solver.start : solver.end] == "quay.io/x/solver:v1"
    assert str(solver.place) == "Deployment/ctl spec.template.spec.containers[0].args[0]"


def test_rendered_container_with_invalid_image_is_a_warning() -> None:
    text = (
        "kind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n"
        "    - {name: c, image: 'MyOrg/Tool:1.0'}\n    - {name: d, image: example.local/d:1}\n"
    )
    found = scan(text)
    assert [i.reference for i in found.images] == ["example.local/d:1"]
    [warning] = found.warnings
    assert "Pod/p container c" in warning and "MyOrg/Tool:1.0" in warning


def test_rendered_output_that_is_not_yaml_is_a_chart_error() -> None:
    with pytest.raises(ChartError, match=r"not YAML"):
        scan("kind: [\n")


# -- discover and find_helm --------------------------------------------------------------------


def test_discover_without_helm_keeps_sources_apart(tmp_path: Path) -> None:
    chart = load(
        tmp_path,
        "image: example.local/web:1\nextra:\n  image: example.local/extra:1\n",
        extra_chart_yaml="annotations:\n  helm.sh/images: |\n"
        "    - {name: w, image: example.local/web:1}\n"
        "    - {name: w, image: example.local/web:1}\n",
    )
    found = discover(chart, helm=None, value_paths=["image"])
    assert found.settings is None and found.disabled == {}
    web = found.images["example.local/web:1"]
    assert web.found_by == {"config", "annotation", "values"}
    assert web.value_paths == {"image": "string"}
    assert found.images["example.local/extra:1"].value_paths == {"extra.image": "string"}


def test_find_helm_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "my-helm"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("BUNDLER_HELM", raising=False)
    assert find_helm() is None
    monkeypatch.setenv("BUNDLER_HELM", str(fake))
    assert find_helm() == str(fake)
    assert find_helm(str(fake)) == str(fake)
    with pytest.raises(UsageError, match=r"--helm"):
        find_helm(str(tmp_path / "absent"))
