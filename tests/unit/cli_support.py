"""The CLI run in-process exactly as the console script runs it, for fast CLI tests."""

from __future__ import annotations

import sys

import pytest

from bundler.cli import main as cli_main


def run_in_process(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str, str]:
    """``bundler ARGS`` through the error boundary: its exit code, stdout and stderr."""
    monkeypatch.setattr(sys, "argv", ["bundler", *args])
    code = 0
    try:
        cli_main.run()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err
