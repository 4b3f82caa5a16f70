"""``bundler pack`` values files: ``-f`` paths are the caller's, config ``values:`` the config's.

Helm renders in a scratch directory, so a relative path handed to it as given would name a file
there. The chart here runs an image only when the values file says so: the image's reference in
pack's completeness error proves Helm read that very file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import run_in_process

IMAGE = "example.invalid/from-values:1.0"
CHART = {
    "Chart.yaml": "apiVersion: v2\nname: tiny\nversion: 0.1.0\n",
    "values.yaml": "image: ''\n",
    "templates/pod.yaml": (
        "{{- if .Values.image }}\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n"
        "spec:\n  containers:\n  - name: c\n    image: {{ .Values.image }}\n{{- end }}\n"
    ),
}


@pytest.fixture(autouse=True)
def _hermetic_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _bundler(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str]:
    code, _, err = run_in_process(args, capsys, monkeypatch)
    return code, err


def _chart(root: Path) -> Path:
    for path, text in CHART.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def test_relative_values_file_is_read_from_the_working_directory(
    tmp_path: Path, helm: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _chart(tmp_path / "chart")
    work = tmp_path / "work"
    work.mkdir()
    (work / "values.yaml").write_text(f"image: {IMAGE}\n")
    monkeypatch.chdir(work)
    code, err = _bundler(
        [
            *("pack", "--chart", "../chart", "-f", "values.yaml", "--helm", helm),
            *("--no-upstream", "--to", f"oci:{tmp_path / 'out'}"),
        ],
        capsys,
        monkeypatch,
    )
    assert code != 0
    assert IMAGE in err, err
    assert "no such file" not in err


def test_missing_values_file_is_not_found_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _chart(tmp_path / "chart")
    monkeypatch.chdir(tmp_path)
    code, err = _bundler(
        ["pack", "--chart", "chart", "-f", "nope.yaml", "--to", f"oci:{tmp_path / 'out'}"],
        capsys,
        monkeypatch,
    )
    assert code == 3
    assert err.strip() == "error: values file nope.yaml does not exist (--values)"


def test_config_values_are_relative_to_the_config_file(
    tmp_path: Path, helm: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    _chart(conf / "chart")
    (conf / "extra.yaml").write_text(f"image: {IMAGE}\n")
    (conf / "bundle.yaml").write_text(
        "apiVersion: bundler.dev/v1\nkind: Bundle\nmetadata:\n  name: tiny\n"
        "chart:\n  path: chart\nvalues:\n  - extra.yaml\nupstream: false\n"
    )
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, err = _bundler(
        ["pack", "../conf/bundle.yaml", "--helm", helm, "--to", f"oci:{tmp_path / 'out'}"],
        capsys,
        monkeypatch,
    )
    assert code != 0
    assert IMAGE in err, err
    assert "no such file" not in err
