"""Options every command shares are declared once, and one cause gives one exit code everywhere.

A key file that is not there, a passphrase file that is not there, a CA file that is not there:
exit 3 (not found) whichever command reads it. A key file that is no file: exit 13 (key).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
from cli_support import run_in_process as _bundler

from bundler.adapters import crypto
from bundler.cli.main import EXIT_CODES, app

README = Path(__file__).resolve().parents[2] / "README.md"
PASSPHRASE = b"correct horse"


@pytest.fixture(autouse=True)
def _hermetic_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("COSIGN_PASSWORD", raising=False)


def _commands() -> dict[str, Any]:
    """Every command of the CLI by its full name ("keys inspect"), as Typer built it."""
    root = typer.main.get_command(app)
    found: dict[str, Any] = {}

    def walk(group: Any, prefix: str) -> None:
        ctx = typer.Context(group)
        for name in group.list_commands(ctx):
            cmd = group.get_command(ctx, name)  # a lazy group loads the command's module now
            if hasattr(cmd, "commands"):
                walk(cmd, f"{prefix}{name} ")
            else:
                found[f"{prefix}{name}"] = cmd

    walk(root, "")
    return found


def _options(cmd: Any) -> dict[str, Any]:
    return {opt: param for param in cmd.params for opt in getattr(param, "opts", [])}


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """vendor.key/.pub and alice.key/.pub, a passphrase file and a policy naming both keys."""
    for name in ("vendor", "alice"):
        crypto.write_key_pair(tmp_path / name, crypto.generate_key(), PASSPHRASE)
    (tmp_path / "pass").write_bytes(PASSPHRASE + b"\n")
    (tmp_path / "policy.yaml").write_text(
        "apiVersion: bundler.dev/v1\nkind: TrustPolicy\nkeys:\n"
        "  - {name: vendor, role: vendor, path: vendor.pub}\n"
        "  - {name: alice, role: approval, path: alice.pub}\n"
        "bundles:\n  - name: demo\n    require:\n      - role: vendor\n"
        "      - role: approval\n"
    )
    return tmp_path


def test_every_command_has_the_output_options() -> None:
    commands = _commands()
    assert {"copy", "pack", "verify", "keys generate", "login", "version"} <= set(commands)
    for name, cmd in commands.items():
        options = _options(cmd)
        for flag in ("-o", "--output", "-q", "--quiet", "-v", "--verbose", "--debug"):
            assert flag in options, f"{name} lacks {flag}"


def test_registry_and_passphrase_options_are_one_declaration() -> None:
    """Each shared option reads the same (help, metavar, default) on every command offering it."""
    shared = [
        "--plain-http",
        "--ca-file",
        "--insecure-skip-tls-verify",
        "--registry-config",
        "--parallel",
        "--output",
        "--passphrase-file",
        "--passphrase-env",
    ]
    seen: dict[str, set[tuple[Any, ...]]] = {flag: set() for flag in shared}
    offered: dict[str, list[str]] = {flag: [] for flag in shared}
    for name, cmd in _commands().items():
        options = _options(cmd)
        for flag in shared:
            if flag in options:
                param = options[flag]
                seen[flag].add((param.help, param.metavar, param.default, tuple(param.opts)))
                offered[flag].append(name)
    for flag, forms in seen.items():
        assert len(forms) == 1, f"{flag} is declared {len(forms)} ways: {forms}"
    registry_commands = set(offered["--plain-http"])
    assert {"copy", "tags", "pack", "inspect", "sign", "verify", "approve", "export"} <= (
        registry_commands
    )
    assert {"import", "promote", "login"} <= registry_commands
    for flag in ("--ca-file", "--insecure-skip-tls-verify", "--registry-config"):
        assert registry_commands <= set(offered[flag]), flag
    assert (
        set(offered["--passphrase-file"])
        == set(offered["--passphrase-env"])
        == {
            "sign",
            "approve",
            "promote",
            "keys generate",
            "keys inspect",
        }
    )


def _key_commands(d: Path, key: Path, pass_file: Path) -> dict[str, list[str]]:
    """Every command that opens a key file, given ``key`` (and ``pass_file`` where asked)."""
    src = f"oci:{d / 'no-layout'}:demo"
    secret = ["--passphrase-file", str(pass_file)]
    policy = ["--policy", str(d / "policy.yaml")]
    return {
        "sign": ["sign", src, "--key", str(key), *secret],
        "approve": ["approve", src, "--key", str(key), *policy, *secret],
        "promote": ["promote", src, "--to", "127.0.0.1:1/p", *policy, "--key", str(key), *secret],
        "keys inspect": ["keys", "inspect", str(key), *secret],
        "verify --key": ["verify", src, "--key", str(key)],
        "verify --promotion": ["verify", src, "--promotion", "--key", str(key)],
        "import --key": ["import", src, "--to", f"oci:{d / 'to'}", "--key", str(key)],
    }


@pytest.mark.parametrize("which", list(_key_commands(Path(), Path(), Path())))
def test_a_missing_key_file_is_exit_3_in_every_command(
    which: str, keys: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = _key_commands(keys, keys / "absent.key", keys / "pass")[which]
    code, out, err = _bundler(argv, capsys, monkeypatch)
    assert code == 3, err
    assert err == f"error: key file {keys / 'absent.key'} does not exist\n"
    assert out == ""


@pytest.mark.parametrize("which", list(_key_commands(Path(), Path(), Path())))
def test_a_key_file_that_is_a_directory_is_exit_13_in_every_command(
    which: str, keys: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (keys / "dir.key").mkdir()
    code, _, err = _bundler(
        _key_commands(keys, keys / "dir.key", keys / "pass")[which], capsys, monkeypatch
    )
    assert code == 13, err
    assert err.startswith(f"error: cannot read key file {keys / 'dir.key'}: ")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("which", ["sign", "approve", "promote", "keys inspect"])
def test_a_missing_passphrase_file_is_exit_3_in_every_command(
    which: str, keys: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key = keys / ("vendor.key" if which != "approve" else "alice.key")
    argv = _key_commands(keys, key, keys / "no-pass")[which]
    code, _, err = _bundler(argv, capsys, monkeypatch)
    assert code == 3, err
    assert err == f"error: passphrase file {keys / 'no-pass'} does not exist\n"


def test_keys_generate_with_a_missing_passphrase_file_is_exit_3_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["keys", "generate", str(tmp_path / "k"), "--passphrase-file", str(tmp_path / "no")]
    code, _, err = _bundler(argv, capsys, monkeypatch)
    assert code == 3, err
    assert list(tmp_path.glob("k.*")) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["copy", "--from", "oci:{d}/a:x", "--to", "oci:{d}/b:x"],
        ["tags", "127.0.0.1:1/repo"],
        ["inspect", "oci:{d}/a:x"],
        ["export", "oci:{d}/a:x", "--to", "archive:{d}/b.tar"],
        ["verify", "oci:{d}/a:x", "--key", "{d}/vendor.pub"],
    ],
    ids=lambda argv: argv[0],
)
def test_a_missing_ca_file_is_exit_3(
    argv: list[str],
    keys: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = [a.format(d=keys) for a in argv] + ["--ca-file", str(keys / "no-ca.pem")]
    code, _, err = _bundler(args, capsys, monkeypatch)
    assert code == 3, err
    assert err == f"error: CA file {keys / 'no-ca.pem'} does not exist (--ca-file)\n"


@pytest.mark.parametrize(
    ("argv", "missing"),
    [
        (["pack", "{d}/bundle.yaml", "--to", "oci:{d}/out"], "bundle config {d}/bundle.yaml"),
        (["pack", "--chart", "{d}/chart", "--to", "oci:{d}/out"], "chart {d}/chart"),
        (["images", "{d}/chart"], "chart {d}/chart"),
        (["verify", "oci:{d}/a:x", "--policy", "{d}/p.yaml"], "trust policy {d}/p.yaml"),
        (["import", "oci:{d}/a:x", "--to", "oci:{d}/b", "--policy", "{d}/p.yaml"], "trust policy"),
        (["copy", "--from", "archive:{d}/a.tar", "--to", "oci:{d}/b:x"], "archive {d}/a.tar"),
    ],
    ids=lambda v: v[0] if isinstance(v, list) else "",
)
def test_any_other_missing_file_is_exit_3(
    argv: list[str],
    missing: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, _, err = _bundler([a.format(d=tmp_path) for a in argv], capsys, monkeypatch)
    assert code == 3, err
    assert missing.format(d=tmp_path) in err
    assert len(err.splitlines()) == 1


def _readme_exit_codes() -> dict[int, str]:
    """The README's exit-code table: code -> the meaning's name (before its colon)."""
    text = README.read_text()
    table = text[text.index("| exit | meaning |") :].split("\n\n", 1)[0]
    codes: dict[int, str] = {}
    for line in table.splitlines()[2:]:
        match = re.fullmatch(r"\| (\d+) \| ([^|:(]+)[^|]*\|", line.strip())
        assert match, f"README exit-code row does not parse: {line!r}"
        codes[int(match.group(1))] = match.group(2).strip()
    return codes


def test_readme_exit_code_table_is_exit_codes_both_ways() -> None:
    documented = _readme_exit_codes()
    code_names = {code: name for _, code, name in EXIT_CODES}
    # Not families: success, a bug, and the signals run() stops on (128 + SIGINT, SIGTERM).
    outside = {0: "success", 1: "internal error", 130: "interrupted", 143: "terminated"}
    assert documented == {**code_names, **outside}


@pytest.mark.parametrize("command", ["images", "pack"])
def test_a_missing_set_file_file_is_exit_3_before_helm_runs(
    command: str,
    helm: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BUNDLER_HELM", helm)
    chart = Path(__file__).resolve().parents[2] / "examples" / "chart" / "demo"
    argv = [command, str(chart)] if command == "images" else [command, "--chart", str(chart)]
    if command == "pack":
        argv += ["--to", f"oci:{tmp_path / 'out'}"]
    argv += ["--set-file", f"web.extra={tmp_path / 'nope.txt'}"]
    code, _, err = _bundler(argv, capsys, monkeypatch)
    assert code == 3, err
    assert err.startswith(f"error: --set-file web.extra={tmp_path / 'nope.txt'}: ")
    assert "does not exist" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_set_file_file_that_is_there_renders(
    helm: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUNDLER_HELM", helm)
    chart = Path(__file__).resolve().parents[2] / "examples" / "chart" / "demo"
    (tmp_path / "extra.txt").write_text("some text\n")
    argv = ["images", str(chart), "--set-file", f"web.extra={tmp_path / 'extra.txt'}"]
    code, out, err = _bundler([*argv, "-o", "json"], capsys, monkeypatch)
    assert code == 0, err
    assert '"rendered": true' in out
