"""Pack's rules without a registry: config files, completeness, platform filtering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bundler.adapters.bundleconfig import load_bundle_config
from bundler.errors import ConfigError, NotFoundError, UsageError
from bundler.model import mediatypes as mt
from bundler.model.bundle import canonical_json
from bundler.model.descriptor import Platform
from bundler.model.digest import Digest
from bundler.model.manifest import parse_manifest
from bundler.model.rendering import RenderSettings
from bundler.model.spec import BundleSpec
from bundler.services.discover import DiscoveredImage, Discovery
from bundler.services.pack import filter_platforms, select_images


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bundle.yaml"
    path.write_text(text)
    return path


GOOD = """
apiVersion: bundler.dev/v1
kind: Bundle
metadata: {name: demo, version: 1.2.3, annotations: {a: b}}
chart: {path: chart}
values: [prod.yaml]
images: [{ref: "example.local/x:1", valuePaths: [x.image]}]
valuePaths: [tools.image]
platforms: [linux/amd64]
sources:
  - oci: images
  - dockerArchive: saved.tar
  - mirror: {from: example.local, to: "127.0.0.1:5000/mirror"}
upstream: false
allowMissing: ["example.local/y:2"]
"""


def test_a_full_config_is_read_with_paths_relative_to_it(tmp_path: Path) -> None:
    spec = load_bundle_config(_config(tmp_path, GOOD))
    assert spec.name == "demo" and spec.version == "1.2.3"
    assert spec.chart_path == tmp_path / "chart"
    assert spec.values_files == [tmp_path / "prod.yaml"]
    assert [str(s) for s in spec.sources] == [
        f"oci:{tmp_path / 'images'}",
        f"docker-archive:{tmp_path / 'saved.tar'}",
        "mirror example.local=127.0.0.1:5000/mirror",
    ]
    assert spec.upstream is False
    assert spec.images[0].value_paths == ("x.image",)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("apiVersion: bundler.dev/v1\nkind: Bundle\nmetadata: {name: demo}\n", "chart"),
        ("apiVersion: v9\nkind: Bundle\nmetadata: {name: demo}\nchart: {path: c}\n", "apiVersion"),
        (
            "apiVersion: bundler.dev/v1\nkind: Bundle\nmetadata: {name: Demo!}\nchart: {path: c}\n",
            "metadata.name",
        ),
        (
            "apiVersion: bundler.dev/v1\nkind: Bundle\nmetadata: {name: d}\n"
            "chart: {path: c, ref: r}\n",
            "chart",
        ),
        (
            "apiVersion: bundler.dev/v1\nkind: Bundle\nmetadata: {name: d}\nchart: {path: c}\n"
            "platforms: [amd64]\n",
            "platforms[0]",
        ),
        (
            "apiVersion: bundler.dev/v1\nkind: Bundle\nmetadata: {name: d}\nchart: {path: c}\n"
            "surprise: 1\n",
            "(top level)",
        ),
    ],
)
def test_a_config_breaking_its_schema_names_the_field(
    tmp_path: Path, text: str, where: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_bundle_config(_config(tmp_path, text))
    assert where in str(caught.value)


def test_a_config_that_is_not_yaml_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="line 2"):
        load_bundle_config(_config(tmp_path, "a: b\n  c: [\n"))


def test_a_missing_config_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        load_bundle_config(tmp_path / "absent.yaml")


def _discovery(**images: set[str]) -> Discovery:
    """A discovery whose images were found by the given sources (keyword: reference slug)."""
    found = {}
    for slug, sources in images.items():
        ref = f"example.local/{slug}:1"
        found[ref] = DiscoveredImage(ref, set(sources))
    disabled = {"example.local/off:1": DiscoveredImage("example.local/off:1", {"values"})}
    return Discovery(found, disabled, [], RenderSettings({}), [])


def test_every_rendered_image_is_selected_so_the_bundle_is_complete() -> None:
    selected = select_images(BundleSpec(), _discovery(a={"template"}, b={"template", "values"}))
    assert sorted(selected) == ["example.local/a:1", "example.local/b:1"]


def test_allow_missing_leaves_a_named_rendered_image_out() -> None:
    spec = BundleSpec(allow_missing=["example.local/a:1"])
    assert sorted(select_images(spec, _discovery(a={"template"}, b={"annotation"}))) == [
        "example.local/b:1"
    ]


def test_images_of_components_that_are_off_only_when_asked() -> None:
    discovery = _discovery(a={"template"})
    assert "example.local/off:1" not in select_images(BundleSpec(), discovery)
    assert "example.local/off:1" in select_images(BundleSpec(include_disabled=True), discovery)


def _index() -> bytes:
    def child(arch: str, variant: str | None = None) -> dict[str, object]:
        platform = {"os": "linux", "architecture": arch}
        if variant:
            platform["variant"] = variant
        return {
            "mediaType": mt.OCI_MANIFEST,
            "digest": str(Digest.of(arch.encode())),
            "size": 100,
            "platform": platform,
        }

    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [child("amd64"), child("arm64", "v8"), child("arm", "v7")],
            "annotations": {"keep": "me"},
        },
        indent=1,
    ).encode()


def test_platform_filter_keeps_children_and_other_fields_untouched() -> None:
    index = parse_manifest(_index())
    filtered = filter_platforms(index, [Platform.parse("linux/arm64")], "x")
    assert [str(d.platform) for d in filtered.manifests] == ["linux/arm64/v8"]
    assert filtered.annotations == {"keep": "me"}
    assert filtered.manifests[0].digest == index.manifests[1].digest
    assert filtered.raw == canonical_json(json.loads(filtered.raw))


def test_platform_filter_matching_everything_keeps_the_original_bytes() -> None:
    index = parse_manifest(_index())
    wanted = [Platform.parse(p) for p in ("linux/amd64", "linux/arm64", "linux/arm")]
    assert filter_platforms(index, wanted, "x") is index


def test_platform_filter_matching_nothing_is_refused_listing_what_exists() -> None:
    with pytest.raises(UsageError, match="linux/arm/v7"):
        filter_platforms(parse_manifest(_index()), [Platform.parse("windows/amd64")], "x")


def test_a_kube_version_that_is_not_a_version_is_a_usage_error_before_helm_runs() -> None:
    from bundler.errors import UsageError
    from bundler.services.pack import render_settings

    with pytest.raises(UsageError, match=r"--kube-version 'banana' is not a Kubernetes version"):
        render_settings(BundleSpec(kube_version="banana"), None)
    assert render_settings(BundleSpec(kube_version="v1.29.3"), None).kube_version == "v1.29.3"
