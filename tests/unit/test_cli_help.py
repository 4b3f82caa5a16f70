"""Every command's --help renders in plain text, with metavars a user reads, in flow order.

And ``bundler completion SHELL`` writes a script that the shell itself runs to complete.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bundler.cli.main import FLOW

COMMANDS = [
    ["copy"],
    ["tags"],
    ["login"],
    ["logout"],
    ["images"],
    ["pack"],
    ["inspect"],
    ["keys", "generate"],
    ["keys", "inspect"],
    ["sign"],
    ["verify"],
    ["approve"],
    ["export"],
    ["import"],
    ["promote"],
    ["version"],
    ["completion"],
]
# What Typer and click print for a parameter whose metavar nobody chose: Python's type names.
TYPE_METAVARS = re.compile(
    r"^(<(str|int|float|bool|path|list\[.*\]|int range|float range|text)>|"
    r"TEXT|INTEGER|FLOAT|BOOLEAN|PATH|FILENAME|DIRECTORY|\{\w*_\w*\}|\[\w*_\w*\])$"
)
OPTION_ROW = re.compile(r"^\s+(?:-\w, )?(--[\w-]+)(?:, --[\w-]+)*(?: (\S+))?", re.MULTILINE)


def _help(*command: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "bundler.cli.main", *command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return proc.stdout


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_renders(command: list[str], flag: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bundler.cli.main", *command, flag],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_no_python_type_name_is_a_metavar(command: list[str]) -> None:
    text = _help(*command)
    usage = text.splitlines()[0]
    assert usage.startswith(f"Usage: bundler {' '.join(command)} ")
    for word in usage.split()[2 + len(command) :]:
        assert not TYPE_METAVARS.match(word), f"{usage!r}: {word}"
        assert word == word.upper() or word.startswith("[OPTIONS"), f"{usage!r}: {word}"
    for option, metavar in OPTION_ROW.findall(text):
        if metavar:
            assert not TYPE_METAVARS.match(metavar), f"{command}: {option} {metavar}"
            assert "_" not in metavar, f"{command}: {option} {metavar}"


def test_commands_are_listed_in_the_order_of_the_flow() -> None:
    text = _help()
    listed = re.findall(r"^  ([a-z]+)  ", text.split("Commands:", 1)[1], re.MULTILINE)
    assert listed == list(FLOW)
    assert listed[:8] == [
        "pack", "images", "sign", "approve", "verify", "export", "import", "promote"
    ]  # fmt: skip


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_bash_completion_script_completes_commands_and_options(tmp_path: Path) -> None:
    """The printed script, sourced by bash, completes through the bundler on PATH."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "bundler"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m bundler.cli.main "$@"\n')
    wrapper.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    script = (
        "source <(bundler completion bash)\n"
        "COMP_WORDS=(bundler co); COMP_CWORD=1; _bundler_completion bundler\n"
        'printf "%s\\n" "${COMPREPLY[@]}"; echo --\n'
        "COMP_WORDS=(bundler export --fo); COMP_CWORD=2; _bundler_completion bundler\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    proc = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    commands, options = proc.stdout.split("--\n")
    assert sorted(commands.split()) == ["completion", "copy"]
    assert options.split() == ["--force"]


@pytest.mark.parametrize("request_spelling", ["bash_source", "source_bash"])
def test_the_completion_variable_prints_the_script_as_the_command_does(
    request_spelling: str,
) -> None:
    run = [sys.executable, "-m", "bundler.cli.main"]
    printed = subprocess.run(
        [*run, "completion", "bash"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    env = {**os.environ, "_BUNDLER_COMPLETE": request_spelling}
    sourced = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60, check=True)
    assert sourced.stdout == printed
    assert "_BUNDLER_COMPLETE=complete_bash" in printed


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_completion_scripts_for_zsh_and_fish_name_bundler(shell: str) -> None:
    text = subprocess.run(
        [sys.executable, "-m", "bundler.cli.main", "completion", shell],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert f"_BUNDLER_COMPLETE=complete_{shell}" in text
    assert "bundler" in text
