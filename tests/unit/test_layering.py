"""The import contract, read from the ``ast`` of every module.

The verification kernel (``services/trust.py``) is the only place that makes a trust decision,
so it is the only module that raises ``VerificationError``. Services talk to transports through
the ``Source``/``Target`` protocols and ``Transports`` (the one seam that knows adapter
classes): no ``isinstance`` on an adapter class, no ``getattr``/``setattr`` reaching into an
adapter, no registry client, no subprocess.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "bundler"
KERNEL = PACKAGE / "services" / "trust.py"
SEAM = PACKAGE / "services" / "transports.py"
SERVICES = sorted(p for p in (PACKAGE / "services").glob("*.py") if p != SEAM)


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _adapter_names(tree: ast.Module) -> set[str]:
    """Names a module binds from ``bundler.adapters`` (at any depth of the file)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bundler.adapters"):
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def _raises_verification_error(tree: ast.Module) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        if node.func.id == "VerificationError":
            lines.append(node.lineno)
    return lines


def test_only_the_kernel_makes_a_verification_error() -> None:
    found = {
        str(path.relative_to(PACKAGE)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != KERNEL and (lines := _raises_verification_error(_tree(path)))
    }
    assert found == {}
    assert _raises_verification_error(_tree(KERNEL))  # the kernel does (the scan sees calls)


def _contract_problems(path: Path) -> list[str]:
    tree = _tree(path)
    adapters = _adapter_names(tree)
    problems: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "isinstance" and len(node.args) == 2:
                classes = node.args[1]
                named = classes.elts if isinstance(classes, ast.Tuple) else [classes]
                for cls in named:
                    if isinstance(cls, ast.Name) and cls.id in adapters:
                        problems.append(f"line {node.lineno}: isinstance on {cls.id}")
            if node.func.id in ("getattr", "setattr", "hasattr"):
                problems.append(f"line {node.lineno}: {node.func.id}")
        called = node.func if isinstance(node, ast.Call) else None
        if isinstance(called, ast.Attribute) and called.attr == "client":
            problems.append(f"line {called.lineno}: a registry client asked for")
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                modules.append(node.module or "")
            if any(m.split(".")[0] == "subprocess" for m in modules):
                problems.append(f"line {node.lineno}: subprocess")
            if any(m.startswith("bundler.adapters.registry.client") for m in modules):
                problems.append(f"line {node.lineno}: the registry client imported")
    return problems


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_services_do_not_reach_into_adapters(path: Path) -> None:
    assert _contract_problems(path) == []


def test_the_contract_scan_sees_what_it_forbids(tmp_path: Path) -> None:
    """The scan is not blind: a module breaking each rule is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import subprocess\n"
        "from bundler.adapters.layout import LayoutSource\n"
        "def f(source, transports):\n"
        "    if isinstance(source, LayoutSource):\n"
        "        return getattr(source, 'reader')\n"
        "    return transports.client('host')\n"
    )
    found = "\n".join(_contract_problems(bad))
    for rule in ("isinstance on LayoutSource", "getattr", "registry client", "subprocess"):
        assert rule in found
