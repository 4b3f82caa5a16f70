"""Progress on a terminal, silence elsewhere, and a request log that never shows a credential.

The CLI runs with its stderr on a pseudo-terminal (``pty.openpty``) to see what a user sees:
every command that moves or checks bytes draws its bar there, in IEC units, counting only
bytes that really move. Without a terminal, with ``-q`` or with ``-o json`` nothing is drawn.
"""

from __future__ import annotations

import base64
import os
import pty
import re
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from copy_support import BUNDLER, WEB_REF, Cli, registry_flags
from harness.registry import RegistryServer
from pack_support import DEMO_CHART, layout_source, pack_cli
from transfer_support import PASS_VAR, PASSPHRASE, make_keys

# "12.0 KiB / 12.0 KiB": what the bar shows, bytes moved of bytes to move (IEC units only).
BAR = re.compile(r"(\d+(?:\.\d)? (?:B|KiB|MiB|GiB)) / (\d+(?:\.\d)? (?:B|KiB|MiB|GiB))")
DEADLINE_S = 120


@dataclass(frozen=True)
class TerminalRun:
    returncode: int
    stdout: str
    terminal: str  # everything written to stderr, the pseudo-terminal


def on_terminal(cli: Cli, *args: str | Path) -> TerminalRun:
    """Run the CLI with stderr on a pseudo-terminal (stdout a pipe); collect both."""
    leader, follower = pty.openpty()
    env = {**cli.env, "TERM": "xterm-256color", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [*BUNDLER, *(str(a) for a in args)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=follower,
        text=False,
    )
    os.close(follower)
    seen = bytearray()
    stop = time.monotonic() + DEADLINE_S  # a bound on a hung child, not a measurement
    try:
        while time.monotonic() < stop:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        assert proc.stdout is not None
        out = proc.stdout.read().decode()
        code = proc.wait(timeout=DEADLINE_S)
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return TerminalRun(code, out, seen.decode(errors="replace"))


def bars(run: TerminalRun) -> list[tuple[str, str]]:
    return BAR.findall(run.terminal)


def assert_drawn(run: TerminalRun) -> list[tuple[str, str]]:
    assert run.returncode == 0, run
    drawn = bars(run)
    assert drawn, f"no progress drawn on the terminal:\n{run.terminal!r}"
    assert not re.search(r"\d (?:kB|MB|GB)\b", run.terminal)  # IEC units, never SI
    return drawn


@pytest.fixture
def tcli(helm: str, tmp_path: Path) -> Cli:
    cli = pack_cli(tmp_path / "user", helm)
    cli.env[PASS_VAR] = PASSPHRASE
    return cli


def test_copy_draws_its_bar_on_a_terminal_and_ends_with_every_byte_moved(
    tcli: Cli, example_layout: Path, tmp_path: Path
) -> None:
    run = on_terminal(
        tcli,
        "copy",
        "--from",
        f"oci:{example_layout}:{WEB_REF}",
        "--to",
        f"oci:{tmp_path / 'out'}:web",
    )
    moved, total = assert_drawn(run)[-1]
    assert moved == total != "0 B"


def test_blobs_already_there_or_mounted_are_not_counted_as_moved(
    tcli: Cli, example_layout: Path, plain_registry: RegistryServer, tmp_path: Path
) -> None:
    source = f"oci:{example_layout}:{WEB_REF}"
    first = f"{plain_registry.host}/progress-{tmp_path.name}/a:1"
    assert_drawn(on_terminal(tcli, "copy", "--from", source, "--to", first))
    again = on_terminal(tcli, "copy", "--from", source, "--to", first)  # all already there
    assert assert_drawn(again)[-1] == ("0 B", "0 B")
    mounted = on_terminal(
        tcli, "copy", "--from", first, "--to", f"{plain_registry.host}/progress-{tmp_path.name}/b:1"
    )
    assert assert_drawn(mounted)[-1] == ("0 B", "0 B")
    summary = re.search(r"\((\d+) copied, (\d+) already there, (\d+) mounted\)", mounted.terminal)
    assert summary is not None and summary.group(1) == "0" and int(summary.group(3)) > 0


def test_every_command_that_moves_or_checks_bytes_draws_progress(
    tcli: Cli, example_layout: Path, tmp_path: Path
) -> None:
    keys = make_keys(tmp_path, "vendor", "promoter")
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "apiVersion: bundler.dev/v1\nkind: TrustPolicy\nkeys:\n"
        f"  - {{name: vendor, role: vendor, path: {keys.public('vendor')}}}\n"
        "bundles:\n  - name: demo\n    require:\n      - role: vendor\n"
    )
    bundle = f"oci:{tmp_path / 'bundle'}:demo:1.0.0"
    secret = ["--passphrase-env", PASS_VAR]
    runs: dict[str, list[str | Path]] = {
        "pack": ["pack", "--chart", DEMO_CHART, *layout_source(example_layout), "--to", bundle],
        "sign": ["sign", bundle, "--key", keys.private("vendor"), *secret],
        "verify": ["verify", bundle, "--key", keys.public("vendor")],
        "export": ["export", bundle, "--to", f"archive:{tmp_path / 'b.tar'}"],
        "import": [
            "import",
            f"archive:{tmp_path / 'b.tar'}",
            "--to",
            f"oci:{tmp_path / 'in'}",
            "--key",
            keys.public("vendor"),
        ],
        "promote": [
            "promote",
            bundle,
            "--to",
            f"oci:{tmp_path / 'promoted'}",
            "--serve-as",
            "registry.internal.test/platform",
            "--policy",
            policy,
            "--key",
            keys.private("promoter"),
            *secret,
        ],
    }
    for name, argv in runs.items():
        run = on_terminal(tcli, *argv)
        if name == "sign":  # signs a digest: no bytes to move or check
            assert run.returncode == 0, run
            continue
        moved, total = assert_drawn(run)[-1]
        assert moved == total != "0 B", (name, run.terminal)


@pytest.mark.parametrize("flags", [["-q"], ["-o", "json"]], ids=["quiet", "json"])
def test_no_progress_on_a_terminal_with_quiet_or_json(
    tcli: Cli, example_layout: Path, tmp_path: Path, flags: list[str]
) -> None:
    run = on_terminal(
        tcli,
        "copy",
        "--from",
        f"oci:{example_layout}:{WEB_REF}",
        "--to",
        f"oci:{tmp_path / 'out'}:web",
        *flags,
    )
    assert run.returncode == 0, run
    assert bars(run) == []
    assert (
        run.terminal == ""
    )  # -q: warnings and errors only (none here); -o json: the result is on stdout


def test_no_progress_without_a_terminal(tcli: Cli, example_layout: Path, tmp_path: Path) -> None:
    res = tcli(
        "copy", "--from", f"oci:{example_layout}:{WEB_REF}", "--to", f"oci:{tmp_path / 'out'}:web"
    )
    assert res.returncode == 0, res.describe()
    assert BAR.findall(res.stderr) == []
    assert "\x1b" not in res.stderr
    assert len(res.stderr.splitlines()) == 1  # the summary line only


def test_verbose_says_what_the_copy_does(tcli: Cli, example_layout: Path, tmp_path: Path) -> None:
    args = ["copy", "--from", f"oci:{example_layout}:{WEB_REF}", "--to", f"oci:{tmp_path / 'o'}:w"]
    res = tcli(*args, "-v")
    assert res.returncode == 0, res.describe()
    assert re.search(r"bundler\.services\.copy: .* -> .*: \d+ manifests, \d+ blobs", res.stderr)
    assert "bundler.adapters.registry" not in res.stderr  # requests only with --debug


def test_debug_logs_every_registry_request_and_never_a_credential(
    tcli: Cli, example_layout: Path, tls_registry: RegistryServer, tmp_path: Path
) -> None:
    assert tls_registry.username is not None and tls_registry.password is not None
    tcli.login_config(tls_registry)
    target = f"{tls_registry.host}/debug-{tmp_path.name}/web:1"
    res = tcli(
        "copy",
        "--from",
        f"oci:{example_layout}:{WEB_REF}",
        "--to",
        target,
        *registry_flags(tls_registry),
        "--debug",
    )
    assert res.returncode == 0, res.describe()
    requests = re.findall(
        r"^bundler\.adapters\.registry\.client: (GET|HEAD|POST|PUT|PATCH) (\S+) -> (\d{3})$",
        res.stderr,
        re.MULTILINE,
    )
    assert ("GET", f"https://{tls_registry.host}/v2/", "401") in requests  # the challenge
    assert any(m == "PUT" and "/manifests/" in u and s == "201" for m, u, s in requests)
    assert all("?" not in url or url.endswith("?…") for _, url, _ in requests)
    basic = base64.b64encode(f"{tls_registry.username}:{tls_registry.password}".encode()).decode()
    for secret in (tls_registry.password, basic, "Authorization", "Basic ", "Bearer "):
        assert secret not in res.stderr + res.stdout


def test_export_checks_the_real_free_space_first_and_asks_at_least_what_it_writes(
    tcli: Cli, example_layout: Path, tmp_path: Path
) -> None:
    bundle = f"oci:{tmp_path / 'bundle'}:demo:1.0.0"
    packed = tcli("pack", "--chart", DEMO_CHART, *layout_source(example_layout), "--to", bundle)
    assert packed.returncode == 0, packed.describe()
    (tmp_path / "media").mkdir()
    res = tcli("export", bundle, "--to", f"archive:{tmp_path / 'media' / 'b.tar'}", "-v")
    assert res.returncode == 0, res.describe()
    room = re.search(r": up to (\d+) bytes to write, (\d+) bytes free$", res.stderr, re.MULTILINE)
    assert room is not None, res.stderr
    needed, free = int(room.group(1)), int(room.group(2))
    assert (tmp_path / "media" / "b.tar").stat().st_size <= needed <= free
