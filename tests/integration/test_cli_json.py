"""``--output json`` on every command: one document on stdout, success and failure alike.

Each command's document is checked against its JSON Schema in ``schemas/`` (the failure
branch is ``schemas/cli-error.schema.json``): the whole flow runs once, in layouts, archives and
a loopback registry, then every command is made to fail once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from copy_support import Cli, Result
from harness.registry import RegistryServer
from pack_support import DEMO_CHART, layout_source, pack_cli
from referencing import Registry, Resource
from transfer_support import PASS_VAR, PASSPHRASE

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def _schema_registry() -> Registry[Any]:
    resources = []
    for path in SCHEMAS.glob("*.schema.json"):
        doc = json.loads(path.read_text())
        resources.append((doc["$id"], Resource.from_contents(doc)))
    return Registry().with_resources(resources)


REGISTRY = _schema_registry()


def check(schema: str, res: Result, code: int = 0) -> dict[str, Any]:
    """``res`` exited ``code`` and printed one document on stdout valid against ``schema``."""
    assert res.returncode == code, res.describe()
    doc: dict[str, Any] = json.loads(res.stdout)
    contents = json.loads((SCHEMAS / schema).read_text())
    validator = jsonschema.Draft202012Validator(contents, registry=REGISTRY)
    errors = sorted(validator.iter_errors(doc), key=str)
    assert not errors, f"{schema}: {errors[0].message} at {list(errors[0].absolute_path)}"
    if code:
        assert doc["exitCode"] == code
        # bundler's "error: ..." line; Typer's usage errors say "Error: ..." after the usage
        assert res.stderr.strip().splitlines()[-1].lower() == f"error: {doc['error']}".lower()
    else:
        assert "exitCode" not in doc
    return doc


@dataclass(frozen=True)
class Flow:
    cli: Cli
    dir: Path
    policy: Path
    results: dict[str, Result]


@pytest.fixture(scope="module")
def flow(
    helm: str,
    example_layout: Path,
    plain_registry: RegistryServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Flow:
    """Every command once, with ``-o json``, from keys to a promotion (stdout kept)."""
    d = tmp_path_factory.mktemp("json-flow")
    cli = pack_cli(d / "user", helm)
    cli.env[PASS_VAR] = PASSPHRASE
    secret = ["--passphrase-env", PASS_VAR]
    runs: dict[str, Result] = {}

    def run(name: str, *args: str | Path, input: str | None = None) -> Result:
        res = cli(*args, "-o", "json", input=input)
        assert res.returncode == 0, res.describe()
        runs[name] = res
        return res

    for name in ("vendor", "approver", "promoter"):
        run(f"keys generate {name}", "keys", "generate", d / name, *secret)
    run("keys generate", "keys", "generate", d / "spare", *secret)
    run("keys inspect", "keys", "inspect", d / "vendor.key", *secret)
    policy = d / "policy.yaml"
    policy.write_text(
        "apiVersion: bundler.dev/v1\nkind: TrustPolicy\nkeys:\n"
        f"  - {{name: vendor, role: vendor, path: {d / 'vendor.pub'}}}\n"
        f"  - {{name: approver, role: approval, path: {d / 'approver.pub'}}}\n"
        "bundles:\n  - name: demo\n    require:\n      - role: vendor\n      - role: approval\n"
    )
    bundle = f"oci:{d / 'bundle'}:demo:1.0.0"
    run("images", "images", DEMO_CHART)
    run("pack", "pack", "--chart", DEMO_CHART, *layout_source(example_layout), "--to", bundle)
    run("inspect", "inspect", bundle)
    run("sign", "sign", bundle, "--key", d / "vendor.key", *secret)
    run("verify", "verify", bundle, "--key", d / "vendor.pub")
    run("approve", "approve", bundle, "--key", d / "approver.key", "--policy", policy, *secret)
    run("export", "export", bundle, "--to", f"archive:{d / 'bundle.tar'}")
    run(
        "import",
        "import",
        f"archive:{d / 'bundle.tar'}",
        "--to",
        f"oci:{d / 'in'}",
        "--key",
        d / "vendor.pub",
    )
    run("copy", "copy", "--from", bundle, "--to", f"{plain_registry.host}/json/demo:1.0.0")
    run("tags", "tags", f"{plain_registry.host}/json/demo")
    run(
        "promote",
        "promote",
        bundle,
        "--to",
        f"oci:{d / 'promoted'}",
        "--serve-as",
        "registry.internal.test/platform",
        "--policy",
        policy,
        "--key",
        d / "promoter.key",
        *secret,
    )
    promoted = json.loads(runs["promote"].stdout)
    chart = f"oci:{d / 'promoted'}:{promoted['chart']['reference']}"
    run("verify --promotion", "verify", chart, "--promotion", "--key", d / "promoter.pub")
    run("login", "login", plain_registry.host, "-u", "someone", "--password-stdin", input="pw\n")
    run("logout", "logout", plain_registry.host)
    run("version", "version")
    return Flow(cli, d, policy, runs)


SUCCESS = {
    "keys generate": "keys-generate-result.schema.json",
    "keys inspect": "keys-inspect-result.schema.json",
    "images": "images-result.schema.json",
    "pack": "pack-result.schema.json",
    "inspect": "inspect-result.schema.json",
    "sign": "sign-result.schema.json",
    "verify": "verify-result.schema.json",
    "approve": "approve-result.schema.json",
    "export": "export-result.schema.json",
    "import": "import-result.schema.json",
    "copy": "copy-result.schema.json",
    "tags": "tags-result.schema.json",
    "promote": "promote-result.schema.json",
    "verify --promotion": "verify-promotion-result.schema.json",
    "login": "login-result.schema.json",
    "logout": "logout-result.schema.json",
    "version": "version-result.schema.json",
}


@pytest.mark.parametrize("command", list(SUCCESS))
def test_success_document_matches_the_commands_schema(flow: Flow, command: str) -> None:
    check(SUCCESS[command], flow.results[command])


def _failures(f: Flow) -> dict[str, tuple[list[str | Path], int]]:
    """A failing invocation of every command, with the exit code its cause has."""
    missing = f.dir / "missing"
    nothing = f"oci:{f.dir / 'nothing'}:x"
    bundle = f"oci:{f.dir / 'bundle'}:demo:1.0.0"
    secret = ["--passphrase-env", PASS_VAR]
    return {
        "keys generate": (["keys", "generate", f.dir / "vendor", *secret], 2),  # already there
        "keys inspect": (["keys", "inspect", missing], 3),
        "images": (["images", missing], 3),
        "pack": (["pack", "--chart", missing, "--to", f"oci:{f.dir / 'x'}"], 3),
        "inspect": (["inspect", nothing], 3),
        "sign": (["sign", nothing, "--key", f.dir / "vendor.key", *secret], 3),
        "verify": (["verify", bundle, "--key", f.dir / "promoter.pub"], 12),
        "approve": (
            ["approve", bundle, "--key", f.dir / "approver.key", "--policy", missing, *secret],
            3,
        ),
        "export": (["export", bundle, "--to", f"archive:{f.dir / 'bundle.tar'}"], 2),  # --force
        "import": (["import", nothing, "--to", f"oci:{f.dir / 'in2'}", "--policy", f.policy], 3),
        "copy": (["copy", "--from", nothing, "--to", f"oci:{f.dir / 'c'}:x"], 3),
        "tags": (["tags", "Not A Repository"], 2),
        "promote": (
            ["promote", bundle, "--to", f"oci:{f.dir / 'p'}", "--policy", missing, "--dry-run"],
            3,
        ),
        "verify --promotion": (["verify", bundle, "--promotion"], 2),
        "login": (["login", "not a host", "-u", "x", "--password-stdin"], 2),
        "logout": (["logout", "not a host"], 2),
        "version": (["version", "--no-such-option"], 2),  # Typer's usage error, too
    }


@pytest.mark.parametrize("command", list(SUCCESS))
def test_failure_is_one_error_document_with_the_familys_exit_code(flow: Flow, command: str) -> None:
    argv, code = _failures(flow)[command]
    res = flow.cli(*argv, "-o", "json", input="")
    check(SUCCESS[command], res, code)


def test_a_failed_verification_carries_the_steps_that_ran(flow: Flow) -> None:
    argv, code = _failures(flow)["verify"]
    doc = check("verify-result.schema.json", flow.cli(*argv, "-o", "json"), code)
    assert doc["steps"], doc
    assert "verification step" in doc["error"]
