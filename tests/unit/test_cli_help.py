"""Every command's --help renders (help texts are plain text, never markup)."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
]


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
