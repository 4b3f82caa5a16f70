"""Chart loading agrees with Helm v4: versions, Chart.yaml scalars, .helmignore, real charts.

Every expectation that names Helm is computed by running the Helm binary on the same input
(``helm package`` for the file set, ``helm show chart`` for the metadata), so a table row can
only pass when bundler and Helm agree on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from bundler.adapters.chart import Chart, load_chart_archive, load_chart_dir, package_files
from bundler.errors import ChartError
from bundler.model.bundle import helm_tag
from bundler.model.chartversion import is_chart_version, parse_chart_version

SHARED_CHARTS = (
    "argo-cd",
    "cert-manager",
    "ingress-nginx",
    "kube-prometheus-stack",
    "traefik",
    "wordpress",
)


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, check=False, cwd=cwd)


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    for path, content in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    return root


def helm_package_members(helm: str, root: Path, out: Path) -> dict[str, bytes] | str:
    """The files ``helm package`` puts in its archive (top directory stripped), or its error."""
    out.mkdir(parents=True, exist_ok=True)
    proc = _run([helm, "package", str(root), "-d", str(out)])
    if proc.returncode != 0:
        return proc.stderr.decode(errors="replace").strip()
    (archive,) = out.glob("*.tgz")
    files: dict[str, bytes] = {}
    with tarfile.open(archive, mode="r:gz") as tar:
        for info in tar:
            if info.isfile():
                handle = tar.extractfile(info)
                assert handle is not None
                files[info.name.split("/", 1)[1]] = handle.read()
    return files


def helm_view(chart: Chart) -> dict[str, bytes | None]:
    """What ``helm package`` writes for a loaded chart: Helm's ``LoadFiles`` then ``Save``.

    Chart.yaml (and Chart.lock) are re-serialised by Helm, so only their presence counts
    (None); subcharts, from directories or ``.tgz`` files alike, are written expanded under
    ``charts/<name>/``; other ``charts/`` members are not files of the chart except ``.prov``.
    """
    view: dict[str, bytes | None] = {}
    v1 = chart.metadata.api_version == "v1"
    for path, data in chart.files.items():
        if path == "Chart.yaml":
            view[path] = None
        elif path in ("Chart.lock", "requirements.lock") and not v1:
            view["Chart.lock"] = None
        elif (path.startswith("charts/") and not path.endswith(".prov")) or (
            path == "requirements.yaml" and not v1
        ):
            continue  # subchart members (re-added below), or dropped by Helm
        else:
            view[path] = data
    seen: set[int] = set()
    for sub in chart.subcharts:
        if id(sub.chart) in seen:
            continue
        seen.add(id(sub.chart))
        for sub_path, sub_data in helm_view(sub.chart).items():
            view[f"charts/{sub.chart.metadata.name}/{sub_path}"] = sub_data
    return view


def same_as_helm(view: dict[str, bytes | None], members: dict[str, bytes]) -> None:
    assert set(view) == set(members)
    for path, data in view.items():
        if data is not None:
            assert data == members[path], path


def helm_show_chart(helm: str, root: Path) -> Any:
    proc = _run([helm, "show", "chart", str(root)])
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


# -- versions -------------------------------------------------------------------------------

VERSIONS = [
    "1.2.3",
    "v1.21.1",
    "1.2",
    "1",
    "v1",
    "01.2.3",
    "1.02.003",
    "1.2-rc1",
    "1.2.3+x",
    "1.2.3-rc.1+build.5",
    "1.2.3-0a",
    "1.2.3.4",
    "1.2.3-01",
    "1.2.3-",
    "1.2.3+",
    "1.2.3-a..b",
    "V1.2.3",
    "latest",
    "1.2.3 ",
    "=1.2.3",
    "18446744073709551615.0.0",
    "18446744073709551616.0.0",
]


@pytest.mark.parametrize("version", VERSIONS)
def test_chart_version_accepted_exactly_when_helm_accepts_it(
    tmp_path: Path, helm: str, version: str
) -> None:
    root = write(tmp_path / "c", {"Chart.yaml": f"apiVersion: v2\nname: c\nversion: '{version}'\n"})
    helm_accepts = _run([helm, "show", "chart", str(root)]).returncode == 0
    assert is_chart_version(version) is helm_accepts
    if helm_accepts:
        assert load_chart_dir(root).metadata.version == version  # kept verbatim
    else:
        with pytest.raises(ChartError, match="is not semantic versioning"):
            load_chart_dir(root)


@pytest.mark.parametrize(
    ("text", "coerced"),
    [
        ("v1.21.1", "1.21.1"),
        ("1.2", "1.2.0"),
        ("1", "1.0.0"),
        ("01.2.3", "1.2.3"),
        ("1.2-rc1", "1.2.0-rc1"),
        ("1.2.3+x", "1.2.3+x"),
    ],
)
def test_chart_version_coerced_for_comparison(text: str, coerced: str) -> None:
    assert str(parse_chart_version(text)) == coerced


def test_coerced_versions_order_as_semver() -> None:
    ordered = ["v0.9", "1.0.0-rc.1", "1", "v1.0.1", "1.2", "01.10.0", "v2"]
    parsed = [parse_chart_version(v) for v in ordered]
    assert parsed == sorted(parsed)
    assert parse_chart_version("1.0.0+a").compare(parse_chart_version("1")) == 0


# -- Chart.yaml scalars ---------------------------------------------------------------------

APP_VERSIONS = [
    "1.10",
    "1.0",
    "2",
    "1e3",
    "0.10",
    "true",
    "0x10",
    "010",
    "08",
    "3.14159265358979",
    "1e6",
    "1234567.0",
    "1_000",
    "0b11",
    "0o17",
    ".5",
    "-.inf",
    ".nan",
    "yes",
    "on",
    "n",
    "2001-12-14",
    "1:30",
    "+1",
    "-0",
    "-0.0",
    "1e-5",
    "0.0000123",
    "9007199254740993",
    "18446744073709551615",
    "1.5e300",
    "1e400",
    "'1.10'",
    "v1.2.3",
]


@pytest.mark.parametrize("raw", APP_VERSIONS)
def test_app_version_reads_as_helm_reads_it(tmp_path: Path, helm: str, raw: str) -> None:
    root = write(
        tmp_path / "c",
        {"Chart.yaml": f"apiVersion: v2\nname: c\nversion: 1.0.0\nappVersion: {raw}\n"},
    )
    expected = helm_show_chart(helm, root)["appVersion"]
    assert isinstance(expected, str)
    chart = load_chart_dir(root)
    assert chart.metadata.app_version == expected
    assert json.loads(chart.metadata.config_json())["appVersion"] == expected


@pytest.mark.parametrize("raw", ["1.0", "1.10", "2"])
def test_unquoted_version_is_the_text_helm_makes_of_it(tmp_path: Path, helm: str, raw: str) -> None:
    root = write(tmp_path / "c", {"Chart.yaml": f"apiVersion: v2\nname: c\nversion: {raw}\n"})
    chart = load_chart_dir(root)
    assert chart.metadata.version == helm_show_chart(helm, root)["version"]


@pytest.mark.parametrize("raw", ["{a: 1}", "[1, 2]"])
def test_app_version_map_or_list_is_refused(tmp_path: Path, helm: str, raw: str) -> None:
    root = write(
        tmp_path / "c",
        {"Chart.yaml": f"apiVersion: v2\nname: c\nversion: 1.0.0\nappVersion: {raw}\n"},
    )
    assert _run([helm, "show", "chart", str(root)]).returncode != 0
    with pytest.raises(ChartError, match="appVersion must be a string"):
        load_chart_dir(root)


def test_metadata_scalars_in_config_blob_match_helm(tmp_path: Path, helm: str) -> None:
    root = write(
        tmp_path / "c",
        {
            "Chart.yaml": "apiVersion: v2\nname: c\nversion: v1.2\nappVersion: 1.10\n"
            "description: 2.50\nhome: 0x1F\nkeywords: [1.0, true, x]\n"
            "annotations: {a: 1.0, b: yes, c: text}\nkubeVersion: '>=1.20'\n"
            "deprecated: on\ndependencies:\n- name: d\n  version: 1.0\n  repository: ''\n"
            "  condition: d.enabled\n  enabled: yes\n",
            "charts/d/Chart.yaml": "apiVersion: v2\nname: d\nversion: 1.0.0\n",
        },
    )
    chart = load_chart_dir(root)
    assert json.loads(chart.metadata.config_json()) == helm_show_chart(helm, root)


# -- .helmignore ----------------------------------------------------------------------------

BASE: dict[str, str | bytes] = {
    "Chart.yaml": "apiVersion: v2\nname: app\nversion: 1.0.0\n",
    "values.yaml": "a: 1\n",
    "templates/cm.yaml": "kind: ConfigMap\n",
    "templates/.hidden.yaml": "x",
    "templates/.dir/x.yaml": "x",
    "templates/_helpers.tpl": "x",
    "README.md": "x",
    "a.txt": "x",
    "top.tgz": "not a chart",
    "d/b.txt": "x",
    "d/e/c.txt": "x",
    "e/d": "x",
    "f.md": "x",
    "ab.md": "x",
    "b.yaml.bak": "x",
    "*.lit": "x",
    "x.lit": "x",
    ".git/config": "x",
    ".gitignore": "x",
    "bom.txt": b"\xef\xbb\xbfwith a BOM\n",
    "docs/keep.md": "x",
    "docs/drop.md": "x",
}

IGNORE_CASES = {
    "no-helmignore": None,
    "root-anchored-star": "/*.tgz\n",
    "base-name-any-depth": "*.txt\n",
    "path-star-stays-in-one-directory": "d/*.txt\n",
    "anchored-path": "/d/e/*.txt\n",
    "directory-only": "d/\n",
    "file-rule-matches-directories-too": "e\n",
    "question-mark": "?.md\n",
    "character-class": "[a-c]b.md\n[^x].lit\n",
    "escape": "\\*.lit\n",
    "trailing-star": "b.yaml*\n",
    "git-directory": ".git/\n.gitignore\n",
    "comments-blanks-spaces": "# a comment\n\n   *.txt   \n\t# indented comment\n",
    "crlf-and-bom": "\ufeff*.md\r\n/d/\r\n",
    "negation-after-a-rule-drops-chart-yaml": "docs/*.md\n!docs/keep.md\n",
    "negation-matching-all": "a.txt\n!*\nREADME.md\n",
    "negation-ignores-what-it-does-not-match": "!*.yaml\n",
    "negated-directory-rule-ignores-files": "!docs/\n",
    "default-rule-after-the-files-rules": "nothing.here\n",
    "malformed-class-refused": "[a-\n",
}


@pytest.mark.parametrize("case", sorted(IGNORE_CASES))
def test_helmignore_gives_the_files_helm_package_gives(
    tmp_path: Path, helm: str, case: str
) -> None:
    files = dict(BASE)
    sub = package_files("sub", {"Chart.yaml": b"apiVersion: v2\nname: sub\nversion: 0.1.0\n"})
    files["charts/sub-0.1.0.tgz"] = sub
    rules = IGNORE_CASES[case]
    if rules is not None:
        files[".helmignore"] = rules
    root = write(tmp_path / "app", files)
    members = helm_package_members(helm, root, tmp_path / "out")
    if isinstance(members, str):  # Helm refuses the chart: a bad rule, or Chart.yaml ignored
        with pytest.raises(ChartError):
            load_chart_dir(root)
        return
    same_as_helm(helm_view(load_chart_dir(root)), members)


def test_rule_with_slash_keeps_subchart_archive_helm_keeps(tmp_path: Path, helm: str) -> None:
    """argo-cd's ``/*.tgz``: a root rule never reaches ``charts/redis-ha-4.38.0.tgz``."""
    sub = package_files(
        "redis-ha", {"Chart.yaml": b"apiVersion: v2\nname: redis-ha\nversion: 4.38.0\n"}
    )
    root = write(
        tmp_path / "app",
        {**BASE, ".helmignore": "/*.tgz\n", "charts/redis-ha-4.38.0.tgz": sub},
    )
    chart = load_chart_dir(root)
    assert "charts/redis-ha-4.38.0.tgz" in chart.files
    assert "top.tgz" not in chart.files
    assert [s.name for s in chart.subcharts] == ["redis-ha"]
    members = helm_package_members(helm, root, tmp_path / "out")
    assert not isinstance(members, str), members
    same_as_helm(helm_view(chart), members)


def test_double_star_and_bad_patterns_are_refused_like_helm(tmp_path: Path, helm: str) -> None:
    for number, rules in enumerate(["**/*.txt\n", "ok\n[\n", "a\\\n"]):
        root = write(tmp_path / f"app{number}", {**BASE, ".helmignore": rules})
        assert isinstance(helm_package_members(helm, root, tmp_path / f"out{number}"), str)
        with pytest.raises(ChartError, match=r"\.helmignore"):
            load_chart_dir(root)


# -- the shared third-party charts ------------------------------------------------------------


@pytest.fixture(scope="session")
def shared_charts(request: pytest.FixtureRequest) -> Path:
    """``$BUNDLER_SHARED_CHARTS``, else the shared data folder's ``charts``; skips if absent."""
    named = os.environ.get("BUNDLER_SHARED_CHARTS")
    path = Path(named) if named else request.getfixturevalue("shared_data") / "charts"
    if not path.is_dir():
        pytest.skip(f"shared charts folder {path} not present")
    return path


@pytest.mark.parametrize("name", SHARED_CHARTS)
def test_shared_chart_files_equal_helm_package(
    tmp_path: Path, helm: str, shared_charts: Path, name: str
) -> None:
    root = shared_charts / name
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    chart = load_chart_dir(root)
    members = helm_package_members(helm, root, tmp_path / "out")
    if isinstance(members, str):
        pytest.skip(f"helm package refuses {name} as it is stored: {members}")
    same_as_helm(helm_view(chart), members)


@pytest.mark.parametrize("name", SHARED_CHARTS)
def test_shared_chart_config_blob_equals_helm_metadata(
    helm: str, shared_charts: Path, name: str
) -> None:
    root = shared_charts / name
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    chart = load_chart_dir(root)
    assert json.loads(chart.metadata.config_json()) == helm_show_chart(helm, root)


def test_cert_manager_v_version_loads_and_tags_verbatim(helm: str, shared_charts: Path) -> None:
    root = shared_charts / "cert-manager"
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    chart = load_chart_dir(root)
    shown = helm_show_chart(helm, root)
    assert chart.metadata.version == shown["version"] == "v1.21.1"
    assert chart.metadata.app_version == shown["appVersion"]
    assert chart.metadata.name == shown["name"]
    assert chart.metadata.description == shown["description"]
    assert helm_tag(chart.metadata.version) == "v1.21.1"
    assert str(parse_chart_version(chart.metadata.version)) == "1.21.1"
    # The archive bundler ships reads back the same.
    again = load_chart_archive(chart.archive, "repacked cert-manager")
    assert again.metadata.config_json() == chart.metadata.config_json()


def test_ignored_links_are_skipped_as_helm_skips_them(tmp_path: Path, helm: str) -> None:
    """Helm asks the rules about a link's target kind; an ignored link is never followed."""
    write(tmp_path / "elsewhere", {"secret": "x"})
    root = write(tmp_path / "app", {**BASE, ".helmignore": "linkdir/\nlinkfile\n"})
    os.symlink(tmp_path / "elsewhere", root / "linkdir")
    os.symlink(tmp_path / "elsewhere" / "secret", root / "linkfile")
    members = helm_package_members(helm, root, tmp_path / "out")
    assert not isinstance(members, str), members
    same_as_helm(helm_view(load_chart_dir(root)), members)


def test_link_helm_would_follow_is_refused(tmp_path: Path, helm: str) -> None:
    """The one deliberate difference: Helm packs a link's target, bundler refuses the link."""
    write(tmp_path / "elsewhere", {"secret": "x"})
    root = write(tmp_path / "app", dict(BASE))
    os.symlink(tmp_path / "elsewhere", root / "linkdir")
    members = helm_package_members(helm, root, tmp_path / "out")
    assert not isinstance(members, str) and "linkdir/secret" in members
    with pytest.raises(ChartError, match="linkdir is a symlink"):
        load_chart_dir(root)


@pytest.mark.parametrize(
    "extra",
    [
        {"charts/README.md": "x"},
        {"charts/x.prov": "x", "charts/_skip": "x", "charts/.hidden": "x"},
        {"charts/dir.tgz/Chart.yaml": "apiVersion: v2\nname: dir\nversion: 1.0.0\n"},
        {"charts/sub/Chart.yaml": "apiVersion: v2\nname: sub\nversion: 1.0.0\n"},
    ],
    ids=["plain-file", "prov-and-skipped-names", "directory-named-tgz", "chart-directory"],
)
def test_charts_folder_members_as_helm_loads_them(
    tmp_path: Path, helm: str, extra: dict[str, str]
) -> None:
    root = write(tmp_path / "app", {**BASE, **extra})
    members = helm_package_members(helm, root, tmp_path / "out")
    if isinstance(members, str):
        with pytest.raises(ChartError, match=r"neither a chart directory nor a chart \.tgz"):
            load_chart_dir(root)
        return
    same_as_helm(helm_view(load_chart_dir(root)), members)
