"""A command run on a pseudo-terminal that is its controlling terminal, to answer a prompt."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import subprocess
import termios
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Answered:
    """What the command did: its exit code, stdout, stderr, and all the terminal showed."""

    returncode: int
    stdout: bytes
    stderr: bytes
    terminal: bytes


def answer_prompt(
    argv: Sequence[str], env: dict[str, str], prompt: bytes, answer: bytes, timeout: float = 120
) -> Answered:
    """Run ``argv`` with a pty as /dev/tty (stdin), type ``answer`` once ``prompt`` shows.

    stdout and stderr stay pipes, so what a program writes there is kept apart from what it
    shows on the terminal. The process is killed if it is still running at the end.
    """

    def controlling_terminal() -> None:  # after setsid: the pty becomes /dev/tty
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        list(argv),
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
        preexec_fn=controlling_terminal,
    )
    os.close(follower)
    seen = b""
    try:
        while prompt not in seen:
            ready, _, _ = select.select([leader], [], [], 60)
            assert ready, f"no prompt on the terminal: {seen!r}"
            seen += os.read(leader, 1024)
        os.write(leader, answer + b"\n")
        stdout, stderr = proc.communicate(timeout=timeout)
        while select.select([leader], [], [], 0)[0]:
            try:
                chunk = os.read(leader, 1024)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        os.close(leader)
    return Answered(proc.returncode, stdout, stderr, seen)
