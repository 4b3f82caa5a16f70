"""Charts: Chart.yaml validated as Helm does, .helmignore, reproducible packaging, and one test
per hostile chart archive."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from bundler.adapters import chart as chart_mod
from bundler.adapters.chart import (
    load_chart,
    load_chart_archive,
    load_chart_dir,
    package_chart_dir,
)
from bundler.errors import ChartError, UnsafeArchiveError

CHART_YAML = "apiVersion: v2\nname: app\nversion: 1.2.3\nappVersion: '2.0'\n"


def write_chart(
    root: Path,
    chart_yaml: str = CHART_YAML,
    values: str | None = "a: 1\n",
    extra: dict[str, str] | None = None,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Chart.yaml").write_text(chart_yaml)
    if values is not None:
        (root / "values.yaml").write_text(values)
    (root / "templates").mkdir(exist_ok=True)
    (root / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
    )
    for path, text in (extra or {}).items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return tar.getmembers()


# -- Chart.yaml and values.yaml ------------------------------------------------------------


def test_valid_chart_loads(tmp_path: Path) -> None:
    chart = load_chart_dir(write_chart(tmp_path / "app"))
    assert chart.metadata.name == "app"
    assert chart.metadata.version == "1.2.3"
    assert chart.metadata.app_version == "2.0"
    assert chart.values == {"a": 1}
    assert "templates/cm.yaml" in chart.files


def test_missing_name_is_refused(tmp_path: Path) -> None:
    root = write_chart(tmp_path / "app", "apiVersion: v2\nversion: 1.0.0\n")
    with pytest.raises(ChartError, match=r"Chart.yaml of chart dir .*: name is required"):
        load_chart_dir(root)


@pytest.mark.parametrize("version", ["1.2.3.4", "V1.0.0", "1.0.0-01", "latest"])
def test_version_that_is_not_semver_is_refused(tmp_path: Path, version: str) -> None:
    root = write_chart(tmp_path / "app", f"apiVersion: v2\nname: app\nversion: '{version}'\n")
    with pytest.raises(ChartError, match=rf"Chart.yaml of .*version '{version}' is not semantic"):
        load_chart_dir(root)


@pytest.mark.parametrize("version", ["v1.0.0", "1.0", "01.0.0", "1"])
def test_version_helm_accepts_loads_verbatim(tmp_path: Path, version: str) -> None:
    root = write_chart(tmp_path / "app", f"apiVersion: v2\nname: app\nversion: '{version}'\n")
    assert load_chart_dir(root).metadata.version == version


def test_unquoted_numeric_version_is_the_text_helm_makes_of_it(tmp_path: Path) -> None:
    root = write_chart(tmp_path / "app", "apiVersion: v2\nname: app\nversion: 1.10\n")
    assert load_chart_dir(root).metadata.version == "1.1"


@pytest.mark.parametrize("name", ["../evil", "a/b", "App", "-app", ".."])
def test_name_with_path_or_bad_characters_is_refused(tmp_path: Path, name: str) -> None:
    root = write_chart(tmp_path / "app", f"apiVersion: v2\nname: '{name}'\nversion: 1.0.0\n")
    with pytest.raises(ChartError, match=r"name .* is invalid"):
        load_chart_dir(root)


def test_chart_yaml_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    root = write_chart(tmp_path / "app", "- apiVersion: v2\n- name: app\n")
    with pytest.raises(ChartError, match=r"Chart.yaml of .*: not a YAML mapping"):
        load_chart_dir(root)


def test_chart_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    root = write_chart(tmp_path / "app", "apiVersion: v2\nname: app\nversion: [1.0.0\n")
    with pytest.raises(ChartError, match=r"Chart.yaml of .*: YAML error at line \d+"):
        load_chart_dir(root)


def test_unknown_api_version_is_refused(tmp_path: Path) -> None:
    root = write_chart(tmp_path / "app", "apiVersion: v9\nname: app\nversion: 1.0.0\n")
    with pytest.raises(ChartError, match=r"apiVersion 'v9'"):
        load_chart_dir(root)


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    root = write_chart(tmp_path / "app", values="image: a/b:1\nimage: a/c:2\n")
    with pytest.raises(ChartError, match=r"values.yaml of .*duplicate key 'image'"):
        load_chart_dir(root)


def test_values_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    root = write_chart(tmp_path / "app", values="a: 1\nb: [\n")
    with pytest.raises(ChartError, match=r"values.yaml of chart dir .*line 3"):
        load_chart_dir(root)


def test_values_that_are_not_a_mapping_are_refused(tmp_path: Path) -> None:
    root = write_chart(tmp_path / "app", values="- a\n- b\n")
    with pytest.raises(ChartError, match=r"values.yaml of .*not a YAML mapping"):
        load_chart_dir(root)


@pytest.mark.parametrize("values", [None, "", "# nothing\n"])
def test_absent_or_empty_values_are_an_empty_mapping(tmp_path: Path, values: str | None) -> None:
    assert load_chart_dir(write_chart(tmp_path / "app", values=values)).values == {}


def test_python_tags_in_yaml_are_not_constructed(tmp_path: Path) -> None:
    root = write_chart(tmp_path / "app", values="a: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ChartError, match=r"values.yaml"):
        load_chart_dir(root)


# -- .helmignore ----------------------------------------------------------------------------


def test_helmignore_globs_and_directories(tmp_path: Path) -> None:
    root = write_chart(
        tmp_path / "app",
        extra={
            ".helmignore": "# comment\n*.tmp\nsecrets/\ndocs/*.md\n",
            "a.tmp": "x",
            "templates/b.tmp": "x",
            "secrets/key": "x",
            "docs/readme.md": "x",
            "docs/sub/deeper.md": "x",
            "docs/other.txt": "x",
            "templates/.hidden.yaml": "x",
            ".git/config": "x",
        },
    )
    files = set(load_chart_dir(root).files)
    assert files == {
        ".helmignore",
        "Chart.yaml",
        "values.yaml",
        "templates/cm.yaml",
        "docs/sub/deeper.md",  # '*' stops at '/', as in Go's filepath.Match
        "docs/other.txt",
        ".git/config",  # Helm has no rule of its own for .git
    }


def test_helmignore_double_star_is_refused_like_helm(tmp_path: Path) -> None:
    root = write_chart(tmp_path / "app", extra={".helmignore": "**/*.tmp\n"})
    with pytest.raises(ChartError, match=r"\.helmignore .*line 1"):
        load_chart_dir(root)


def test_symlink_in_chart_dir_is_refused(tmp_path: Path) -> None:
    root = write_chart(tmp_path / "app")
    (tmp_path / "outside").write_text("secret")
    os.symlink(tmp_path / "outside", root / "templates" / "link.yaml")
    with pytest.raises(ChartError, match=r"templates/link.yaml is a symlink"):
        load_chart_dir(root)


# -- reproducible packaging -------------------------------------------------------------------


def test_packaging_twice_gives_identical_bytes(tmp_path: Path) -> None:
    root = write_chart(tmp_path / "app")
    assert package_chart_dir(root) == package_chart_dir(root)


def test_mtimes_do_not_change_the_bytes(tmp_path: Path) -> None:
    root = write_chart(tmp_path / "app")
    before = package_chart_dir(root)
    for path in root.rglob("*"):
        os.utime(path, (1_000_000_000, 1_000_000_000))
    assert package_chart_dir(root) == before


def test_same_files_elsewhere_give_identical_bytes(tmp_path: Path) -> None:
    assert package_chart_dir(write_chart(tmp_path / "a" / "app")) == package_chart_dir(
        write_chart(tmp_path / "b" / "other-dir-name")
    )


def test_changing_a_file_changes_the_bytes(tmp_path: Path) -> None:
    root = write_chart(tmp_path / "app")
    before = package_chart_dir(root)
    (root / "values.yaml").write_text("a: 2\n")
    assert package_chart_dir(root) != before


def test_archive_layout_and_metadata_are_fixed(tmp_path: Path) -> None:
    root = write_chart(
        tmp_path / "app",
        extra={
            "charts/sub/Chart.yaml": CHART_YAML.replace("name: app", "name: sub"),
            "run.sh": "#!/bin/sh\n",
        },
    )
    (root / "run.sh").chmod(0o755)
    data = package_chart_dir(root)
    assert data[4:8] == b"\0\0\0\0"  # gzip mtime 0
    assert data[3] & 0x08 == 0  # no file name in the gzip header
    infos = members(data)
    assert [i.name for i in infos] == sorted(i.name for i in infos)
    assert all(i.name.startswith("app/") for i in infos)
    assert "app/charts/sub/Chart.yaml" in {i.name for i in infos}
    for info in infos:
        assert (info.mtime, info.uid, info.gid, info.uname, info.gname) == (0, 0, 0, "", "")
        assert info.pax_headers == {}
        assert info.mode == (0o755 if info.name == "app/run.sh" else 0o644)


def test_chart_dir_archive_round_trips(tmp_path: Path) -> None:
    chart = load_chart_dir(write_chart(tmp_path / "app"))
    again = load_chart_archive(chart.archive, "packed")
    assert again.files == chart.files
    assert again.archive == chart.archive


# -- hostile archives: one test per attack ----------------------------------------------------


def tgz(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in entries:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return gzip.compress(raw.getvalue())


def entry(
    name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE, link: str = ""
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info, data


GOOD = entry("app/Chart.yaml", CHART_YAML.encode())


def test_archive_with_a_gzip_extra_field_loads() -> None:
    # `helm package` writes a gzip header with FEXTRA; tarfile's own "r|gz" trips over it.
    import struct
    import zlib

    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") as tar:
        info, data = GOOD
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    body = plain.getvalue()
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    extra = b"Hx\x04\x00abcd"
    header = b"\x1f\x8b\x08\x04" + b"\x00" * 4 + b"\x00\xff" + struct.pack("<H", len(extra))
    member = (
        header
        + extra
        + deflate.compress(body)
        + deflate.flush()
        + struct.pack("<II", zlib.crc32(body), len(body))
    )
    assert load_chart_archive(member, "helm.tgz").metadata.name == "app"


def test_good_archive_loads() -> None:
    chart = load_chart_archive(tgz([GOOD, entry("app/values.yaml", b"a: 1\n")]), "t.tgz")
    assert chart.metadata.name == "app" and chart.values == {"a": 1}


def test_dot_dot_escape_is_refused() -> None:
    with pytest.raises(UnsafeArchiveError, match=r"'app/\.\./\.\./etc/passwd'"):
        load_chart_archive(tgz([GOOD, entry("app/../../etc/passwd")]), "t.tgz")


def test_absolute_path_is_refused() -> None:
    with pytest.raises(UnsafeArchiveError, match=r"'/etc/passwd'"):
        load_chart_archive(tgz([GOOD, entry("/etc/passwd")]), "t.tgz")


def test_symlink_member_is_refused() -> None:
    link = entry("app/templates/x.yaml", b"", tarfile.SYMTYPE, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match=r"'app/templates/x.yaml' is a link"):
        load_chart_archive(tgz([GOOD, link]), "t.tgz")


def test_hardlink_member_is_refused() -> None:
    link = entry("app/values.yaml", b"", tarfile.LNKTYPE, "app/Chart.yaml")
    with pytest.raises(UnsafeArchiveError, match=r"'app/values.yaml' is a link"):
        load_chart_archive(tgz([GOOD, link]), "t.tgz")


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_device_or_fifo_member_is_refused(kind: bytes) -> None:
    with pytest.raises(UnsafeArchiveError, match=r"'app/dev' is a device or special file"):
        load_chart_archive(tgz([GOOD, entry("app/dev", b"", kind)]), "t.tgz")


def test_two_top_level_directories_are_refused() -> None:
    with pytest.raises(UnsafeArchiveError, match=r"outside the top-level directory 'app'"):
        load_chart_archive(tgz([GOOD, entry("other/Chart.yaml", CHART_YAML.encode())]), "t.tgz")


def test_file_at_top_level_is_refused() -> None:
    with pytest.raises(UnsafeArchiveError, match=r"not inside a chart directory"):
        load_chart_archive(tgz([entry("Chart.yaml", CHART_YAML.encode())]), "t.tgz")


def test_duplicate_member_is_refused() -> None:
    with pytest.raises(UnsafeArchiveError, match=r"appears twice"):
        load_chart_archive(tgz([GOOD, GOOD]), "t.tgz")


def test_oversized_uncompressed_content_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chart_mod, "MAX_UNPACKED_BYTES", 1024)
    bomb = tgz([GOOD, entry("app/zeros", b"\0" * 4096)])
    assert len(bomb) < 1024
    with pytest.raises(UnsafeArchiveError, match=r"more than 1024 bytes uncompressed"):
        load_chart_archive(bomb, "t.tgz")


def test_oversized_compressed_archive_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chart_mod, "MAX_ARCHIVE_BYTES", 100)
    with pytest.raises(UnsafeArchiveError, match=r"larger than 100 bytes compressed"):
        load_chart_archive(tgz([GOOD, entry("app/big", os.urandom(512))]), "t.tgz")


def test_too_many_members_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chart_mod, "MAX_FILES", 3)
    many = [GOOD, *(entry(f"app/templates/{i}.yaml") for i in range(5))]
    with pytest.raises(UnsafeArchiveError, match=r"more than 3 members"):
        load_chart_archive(tgz(many), "t.tgz")


def test_not_gzip_is_a_chart_error() -> None:
    with pytest.raises(ChartError, match=r"not a gzip"):
        load_chart_archive(b"PK\x03\x04 zip", "t.zip")


def test_truncated_archive_is_a_chart_error() -> None:
    data = tgz([GOOD, entry("app/values.yaml", os.urandom(4096))])
    with pytest.raises(ChartError, match=r"damaged chart archive"):
        load_chart_archive(data[: len(data) // 2], "t.tgz")


def test_archive_without_chart_yaml_is_refused() -> None:
    with pytest.raises(ChartError, match=r"Chart.yaml is missing"):
        load_chart_archive(tgz([entry("app/values.yaml")]), "t.tgz")


# -- subcharts ----------------------------------------------------------------------------------


def sub_yaml(name: str) -> str:
    return f"apiVersion: v2\nname: {name}\nversion: 0.1.0\nappVersion: '9.9'\n"


def test_subcharts_from_dirs_and_archives_with_alias(tmp_path: Path) -> None:
    packed = package_chart_dir(write_chart(tmp_path / "redis", sub_yaml("redis")))
    root = write_chart(
        tmp_path / "app",
        CHART_YAML + "dependencies:\n  - name: redis\n    version: 0.1.0\n    alias: cache\n"
        "  - name: worker\n    version: 0.1.0\n",
        extra={
            "charts/worker/Chart.yaml": sub_yaml("worker"),
            "charts/worker/values.yaml": "image: a/b:1\n",
            "charts/.hidden/Chart.yaml": "not: a chart\n",
        },
    )
    (root / "charts" / "redis-0.1.0.tgz").write_bytes(packed)
    chart = load_chart(root)
    subs = {s.name: s.chart for s in chart.subcharts}
    assert set(subs) == {"cache", "worker"}
    assert subs["cache"].metadata.name == "redis"
    assert subs["cache"].archive == packed  # original bytes kept
    assert subs["worker"].values == {"image": "a/b:1"}


def test_same_subchart_under_two_aliases(tmp_path: Path) -> None:
    root = write_chart(
        tmp_path / "app",
        CHART_YAML + "dependencies:\n  - {name: redis, alias: cache}\n"
        "  - {name: redis, alias: queue}\n",
        extra={"charts/redis/Chart.yaml": sub_yaml("redis")},
    )
    assert [s.name for s in load_chart_dir(root).subcharts] == ["cache", "queue"]


def test_subchart_archive_is_checked_too(tmp_path: Path) -> None:
    evil = tgz([entry("redis/Chart.yaml", sub_yaml("redis").encode()), entry("redis/../x")])
    root = write_chart(tmp_path / "app")
    (root / "charts").mkdir()
    (root / "charts" / "redis.tgz").write_bytes(evil)
    with pytest.raises(UnsafeArchiveError, match=r"subchart redis.tgz"):
        load_chart_dir(root)


def test_subchart_nesting_is_bounded(tmp_path: Path) -> None:
    root = write_chart(tmp_path / "app")
    path = root
    for depth in range(7):
        path = path / "charts" / f"c{depth}"
        write_chart(path, sub_yaml(f"c{depth}"))
    with pytest.raises(ChartError, match=r"nested deeper than 5"):
        load_chart_dir(root)


# -- Helm's OCI config blob -------------------------------------------------------------------


def test_config_json_has_helms_field_order_and_omits_empty_fields(tmp_path: Path) -> None:
    root = write_chart(
        tmp_path / "app",
        (
            "type: application\n"
            "dependencies:\n  - name: sub\n    version: 1.0.0\n    alias: s\n"
            "kubeVersion: '>=1.25'\n"
            "annotations:\n  z: '1'\n  a: <b>&\n"
            "appVersion: '2.0'\n"
            "apiVersion: v2\n"
            "icon: ''\n"
            "maintainers:\n  - name: Ops\n    email: ops@example.local\n"
            "keywords: [x]\n"
            "description: |\n  two\n  lines\n"
            "version: 1.2.3\n"
            "sources: [https://example.local/src]\n"
            "home: https://example.local\n"
            "name: app\n"
            "deprecated: false\n"
        ),
    )
    config = load_chart_dir(root).metadata.config_json()
    assert config == (
        b'{"name":"app","home":"https://example.local","sources":["https://example.local/src"],'
        b'"version":"1.2.3","description":"two lines ","keywords":["x"],'
        b'"maintainers":[{"name":"Ops","email":"ops@example.local"}],"apiVersion":"v2",'
        b'"appVersion":"2.0","annotations":{"a":"\\u003cb\\u003e\\u0026","z":"1"},'
        b'"kubeVersion":"\\u003e=1.25",'
        b'"dependencies":[{"name":"sub","version":"1.0.0","repository":"","alias":"s"}],'
        b'"type":"application"}'
    )
    assert list(json.loads(config)) == [
        "name",
        "home",
        "sources",
        "version",
        "description",
        "keywords",
        "maintainers",
        "apiVersion",
        "appVersion",
        "annotations",
        "kubeVersion",
        "dependencies",
        "type",
    ]


# Chart.yaml and the config blob `helm push` (Helm v4.1.4) stored for it in a registry: the
# y in keywords is a YAML 1.1 boolean to Helm, the description's newlines become spaces.
HELM_PUSHED_CHART_YAML = (
    "apiVersion: v2\n"
    "name: cfgchart\n"
    "version: 1.2.3+build.1\n"
    "description: |\n"
    "  two\n"
    "  lines <b> & é x y\n"
    "home: https://example.local\n"
    "sources: [https://a, https://b]\n"
    "keywords: [x, y]\n"
    "maintainers:\n"
    "  - name: Ops\n"
    "    email: ops@example.local\n"
    "    url: https://x\n"
    "icon: https://example.local/i.png\n"
    'kubeVersion: ">=1.25"\n'
    "deprecated: true\n"
    "annotations:\n"
    '  z: "1"\n'
    '  a: "<b>"\n'
    "dependencies:\n"
    "  - name: sub\n"
    "    version: 1.0.0\n"
    "    repository: file://charts/sub\n"
    "    condition: sub.enabled\n"
    "    tags: [t1]\n"
    "    alias: s\n"
    "    import-values: [{child: a, parent: b}, x]\n"
    "type: application\n"
    'appVersion: "2.0"\n'
)
HELM_PUSHED_CONFIG = (
    b'{"name":"cfgchart","home":"https://example.local","sources":["https://a","https:'
    b'//b"],"version":"1.2.3+build.1","description":"two lines \\u003cb\\u003e \\u0026 \xc3\xa9'
    b' x y ","keywords":["x","true"],"maintainers":[{"name":"Ops","email":"ops@example'
    b'.local","url":"https://x"}],"icon":"https://example.local/i.png","apiVersion":"v'
    b'2","appVersion":"2.0","deprecated":true,"annotations":{"a":"\\u003cb\\u003e","z":"'
    b'1"},"kubeVersion":"\\u003e=1.25","dependencies":[{"name":"sub","version":"1.0.0",'
    b'"repository":"file://charts/sub","condition":"sub.enabled","tags":["t1"],"import'
    b'-values":[{"child":"a","parent":"b"},"x"],"alias":"s"}],"type":"application"}'
)


def test_config_json_is_byte_identical_to_what_helm_push_stores(tmp_path: Path) -> None:
    root = write_chart(
        tmp_path / "cfgchart",
        HELM_PUSHED_CHART_YAML,
        extra={"charts/sub/Chart.yaml": sub_yaml("sub")},
    )
    assert load_chart_dir(root).metadata.config_json() == HELM_PUSHED_CONFIG
