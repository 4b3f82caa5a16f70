"""Start-up stays cheap: what ``bundler version`` and ``bundler --help`` import, structurally.

Each probe runs the CLI in a fresh interpreter, as a user does, and reports the modules loaded
by the time it exits. Nothing here measures time: the bounds are which modules are imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import typer.main
from typer.core import TyperGroup
from typer.testing import CliRunner

from bundler.cli import main as cli_main
from bundler.cli.lazy import LazyCommand

# Libraries no command needs for parsing its arguments or printing help. Each costs from a few
# to tens of milliseconds to import; the commands that use them import them where they use them.
HEAVY = (
    "cryptography",
    "nacl",
    "oras",
    "requests",
    "urllib3",
    "yaml",
    "rich",
    "pydantic",
    "jsonschema",
    "semver",
    "ssl",
    "concurrent.futures",
)
# bundler's own layers under the CLI, and the commands' modules.
BUNDLER_BELOW_CLI = ("bundler.services", "bundler.adapters", "bundler.model")
COMMAND_MODULES = sorted(
    {e.module for e in cli_main.Commands.listing if isinstance(e, LazyCommand)}
)

PROBE = """
import json, sys
sys.argv = ["bundler", *json.loads(sys.argv[1])]
from bundler.cli.main import run
try:
    run()
except SystemExit as stop:
    code = stop.code
else:
    code = 0
with open(REPORT, "w") as fh:
    json.dump({"code": code, "modules": sorted(sys.modules)}, fh)
"""


def loaded_by(args: list[str], tmp_path: Path) -> tuple[int, set[str]]:
    """Exit code and the set of modules imported by a fresh ``bundler ARGS`` run."""
    report = tmp_path / "report.json"
    code = PROBE.replace("REPORT", repr(str(report)))
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert report.is_file(), proc.stderr
    doc = json.loads(report.read_text())
    return int(doc["code"] or 0), set(doc["modules"])


def offenders(modules: set[str], prefixes: tuple[str, ...] | list[str]) -> list[str]:
    """The modules that are, or are inside, one of ``prefixes``."""
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


@pytest.mark.parametrize("args", [["version"], ["--version"], ["--help"], ["-h"], []], ids=" ".join)
def test_version_and_help_import_no_command_and_no_heavy_library(
    args: list[str], tmp_path: Path
) -> None:
    code, modules = loaded_by(args, tmp_path)
    assert code in (0, 2), code  # no arguments: the help, with click's usage exit code
    assert "bundler.cli.main" in modules  # the probe saw the CLI run
    assert offenders(modules, HEAVY) == []
    assert offenders(modules, BUNDLER_BELOW_CLI) == []
    assert offenders(modules, COMMAND_MODULES) == []


def test_a_command_loads_its_own_module_only(tmp_path: Path) -> None:
    code, modules = loaded_by(["copy", "--help"], tmp_path)
    assert code == 0
    assert "bundler.cli.copy" in modules
    others = [m for m in COMMAND_MODULES if m != "bundler.cli.copy"]
    assert offenders(modules, others) == []
    # Its help needs neither the HTTP stack nor the services under the command.
    assert offenders(modules, HEAVY) == []
    assert offenders(modules, ("bundler.services",)) == []


def test_a_quiet_layout_copy_imports_no_progress_bar_no_http_and_no_archive(
    tmp_path: Path,
) -> None:
    layout = tmp_path / "missing-layout"
    code, modules = loaded_by(
        ["copy", "-q", "--from", f"oci:{layout}", "--to", f"oci:{tmp_path / 'out'}"], tmp_path
    )
    assert code == 3  # not found: the command ran as far as opening the source
    assert "bundler.services.transports" in modules
    assert offenders(modules, ("rich",)) == []
    assert offenders(modules, ("requests", "urllib3", "bundler.adapters.registry.client")) == []
    archives = ("bundler.adapters.archive", "bundler.adapters.volumes")
    assert offenders(modules, (*archives, "bundler.adapters.dockerarchive")) == []


def test_a_copy_to_a_registry_imports_no_bundle_model(tmp_path: Path) -> None:
    # A registry target is named by its reference; only layouts and archives also name a
    # bundle's images, and only a layout source without a ref is asked whether it is a bundle.
    code, modules = loaded_by(
        ["copy", "-q", "--from", f"oci:{tmp_path / 'missing'}:app", "--to", "127.0.0.1:9/x:1"],
        tmp_path,
    )
    assert code == 3
    assert "bundler.services.copy" in modules
    assert offenders(modules, ("bundler.model.bundle",)) == []


def test_the_listing_names_each_command_once_with_its_own_summary() -> None:
    group = typer.main.get_command(cli_main.app)
    assert isinstance(group, cli_main.Commands)
    names = [e if isinstance(e, str) else e.name for e in cli_main.Commands.listing]
    assert len(names) == len(set(names))
    ctx = typer.Context(group)
    for entry in cli_main.Commands.listing:
        if isinstance(entry, str):
            continue
        command = group.get_command(ctx, entry.name)
        assert command is not None, entry.name
        first_paragraph = (command.help or "").split("\n\n")[0]
        assert entry.summary.split() == first_paragraph.split(), entry.name


class _FlowOrder(TyperGroup):
    """An eager group listing its commands in the flow order the lazy group keeps."""

    def list_commands(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        flow = cli_main.FLOW
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: flow.index(n) if n in flow else len(flow))


def eager_app() -> typer.Typer:
    """The application as it was before commands were loaded lazily: every module registered."""
    from bundler.cli import auth, copy, images, keys, pack, promote, serve, transfer, trust
    from bundler.cli.common import command

    app = typer.Typer(
        name="bundler",
        cls=_FlowOrder,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        add_completion=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    for module in (copy, pack, promote, serve, transfer, trust, auth, images, keys):
        module.register(app)
    command(app, "version")(cli_main.version_command)
    command(app, "completion")(cli_main.completion_command)
    app.callback()(cli_main.main)
    return app


@pytest.mark.parametrize("width", [60, 80, 120])
def test_help_lists_the_commands_as_an_eager_group_does(width: int) -> None:
    eager = eager_app()
    assert type(typer.main.get_command(eager)) is _FlowOrder
    runner = CliRunner()
    for args in (["--help"], []):
        expected = runner.invoke(eager, args, prog_name="bundler", terminal_width=width)
        got = runner.invoke(cli_main.app, args, prog_name="bundler", terminal_width=width)
        assert got.output == expected.output
        assert got.exit_code == expected.exit_code
    assert "Commands:" in expected.output and "keys" in expected.output


def test_a_module_that_does_not_register_its_command_is_a_bug() -> None:
    class Broken(cli_main.Commands):
        listing = (LazyCommand("nothing", "bundler.cli.auth", "Registers no such command."),)

    group = Broken(name="broken")
    with pytest.raises(RuntimeError, match="registers no command nothing"):
        group.get_command(typer.Context(group), "nothing")


def test_python_dash_m_bundler_is_the_cli() -> None:
    from bundler import __version__

    proc = subprocess.run(
        [sys.executable, "-m", "bundler", "version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{__version__}\n"
