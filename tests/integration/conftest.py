"""Fixtures of the copy/auth integration tests (helpers live in ``copy_support``)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from copy_support import BIG_LAYER_BYTES, BigImage, Cli, Judge, layout_json


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """The bundler CLI with a private DOCKER_CONFIG and cache for this test."""
    return Cli(tmp_path / "user")


@pytest.fixture(scope="session")
def judge(skopeo: str) -> Judge:
    """skopeo and raw registry HTTP, as independent judges."""
    return Judge(skopeo)


@pytest.fixture(scope="session")
def big_image(synth: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> BigImage:
    """An OCI layout with one image whose single layer is ~200 MiB (stored gzip)."""
    layout = tmp_path_factory.mktemp("big-image") / "layout"
    desc = synth.write_image(
        layout, "big", [synth.LayerSpec("big-blob-layer", BIG_LAYER_BYTES, level=0)]
    )
    manifest = layout_json(layout, desc["digest"])
    layer = manifest["layers"][0]
    return BigImage(layout, "big", desc["digest"], layer["digest"], layer["size"])
