"""SoftHSM2 tokens for tests: each set of tokens lives in its own directory and config file.

``SoftHsm.make(dir)`` writes a ``softhsm2.conf`` whose ``directories.tokendir`` is inside
``dir``; ``init_token`` runs the real ``softhsm2-util --init-token --free``. ``env`` is what a
process needs to see exactly these tokens (SOFTHSM2_CONF) and to find the module
(COSIGN_PKCS11_MODULE_PATH). Nothing runs in the background.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SO_PIN = "so-pin-8642"
MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


def find_module() -> str | None:
    """The SoftHSM2 module file, or None when softhsm2 is not installed."""
    for candidate in MODULE_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    return None


@dataclass(frozen=True)
class SoftHsm:
    """A private SoftHSM2 configuration with its own token directory."""

    module: str
    util: str
    conf: Path

    @classmethod
    def make(cls, directory: Path) -> SoftHsm | None:
        """A new, empty configuration in ``directory``; None when softhsm2 is absent."""
        module, util = find_module(), shutil.which("softhsm2-util")
        if module is None or util is None:
            return None
        tokens = directory / "tokens"
        tokens.mkdir(parents=True)
        conf = directory / "softhsm2.conf"
        conf.write_text(
            f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
        )
        return cls(module, util, conf)

    @property
    def env(self) -> dict[str, str]:
        return {"SOFTHSM2_CONF": str(self.conf), "COSIGN_PKCS11_MODULE_PATH": self.module}

    def init_token(self, label: str, pin: str) -> None:
        """A new initialised token ``label`` whose user PIN is ``pin``."""
        subprocess.run(
            [
                self.util,
                "--init-token",
                "--free",
                "--label",
                label,
                "--so-pin",
                SO_PIN,
                "--pin",
                pin,
            ],
            env={"SOFTHSM2_CONF": str(self.conf), "PATH": "/usr/bin:/bin"},
            check=True,
            capture_output=True,
            timeout=60,
        )
