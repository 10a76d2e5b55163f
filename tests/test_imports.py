"""Import hygiene, checked in fresh interpreters.

1. Importing ``aiodicom`` and every module under it never imports
   pynetdicom (a test-only dependency).
2. The sans-I/O core (``aiodicom.ul`` and ``aiodicom.dimse``) never imports
   asyncio (or any other I/O module).

How (2) stays robust although ``aiodicom/__init__.py`` imports the asyncio
glue: importing ``aiodicom.ul.x`` normally runs the package ``__init__``
first, which would pull asyncio in and make the check meaningless.  So the
subprocess puts a bare stub module named ``aiodicom`` (with ``__path__``
pointing at the real package directory) into ``sys.modules`` first; Python
then imports the submodules from the real files without executing
``aiodicom/__init__.py``.  Any sibling module the core itself imports (e.g.
``aiodicom.uids``) is still really imported and checked.  Because an import
check only sees module-level imports, a second test walks the AST of every
core source file and rejects ``import asyncio`` (and other I/O modules)
anywhere in it, including function-local (lazy) imports.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "aiodicom"
CORE_PACKAGES = ("ul", "dimse")
FORBIDDEN_IN_CORE = {"asyncio", "uvloop", "socket", "selectors", "ssl", "trio", "anyio", "pynetdicom"}


def run_python(code: str) -> dict:  # type: ignore[type-arg]
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


ALL_MODULES = r"""
import importlib, json, pkgutil, sys
errors = []
import aiodicom
names = ["aiodicom"]
for info in pkgutil.walk_packages(aiodicom.__path__, "aiodicom.", onerror=lambda n: errors.append(n)):
    if not info.name.endswith(".__main__"):  # importing __main__ runs the CLI
        names.append(info.name)
for name in names:
    try:
        importlib.import_module(name)
    except Exception as exc:  # reported, makes the test fail
        errors.append(f"{name}: {type(exc).__name__}: {exc}")
print(json.dumps({
    "names": names,
    "errors": errors,
    "pynetdicom": sorted(m for m in sys.modules if m == "pynetdicom" or m.startswith("pynetdicom.")),
    "file": aiodicom.__file__,
}))
"""


def test_no_module_imports_pynetdicom() -> None:
    result = run_python(ALL_MODULES)
    assert result["errors"] == []
    assert Path(result["file"]).resolve().parent == PACKAGE  # this checkout, not an installed copy
    names = set(result["names"])
    # the walk really found the package's modules
    assert {"aiodicom", "aiodicom.ul.pdu", "aiodicom.ul.fsm", "aiodicom.ul.connection"} <= names
    assert result["pynetdicom"] == []


CORE_ONLY = r"""
import importlib, json, pkgutil, sys, types
assert "aiodicom" not in sys.modules
stub = types.ModuleType("aiodicom")
stub.__path__ = [PACKAGE_DIR]
sys.modules["aiodicom"] = stub  # aiodicom/__init__.py is not executed
names = []
for sub in CORE:
    pkg = importlib.import_module("aiodicom." + sub)
    names.append(pkg.__name__)
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(info.name)
        names.append(info.name)
print(json.dumps({
    "names": names,
    "loaded": sorted(m for m in sys.modules if m.startswith("aiodicom")),
    "forbidden": sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN),
    "init_ran": hasattr(sys.modules["aiodicom"], "__version__"),
}))
"""


def test_core_does_not_import_asyncio() -> None:
    code = (
        f"PACKAGE_DIR = {str(PACKAGE)!r}\nCORE = {list(CORE_PACKAGES)!r}\n"
        f"FORBIDDEN = {sorted(FORBIDDEN_IN_CORE)!r}\n" + CORE_ONLY
    )
    result = run_python(code)
    assert not result["init_ran"]
    assert {"aiodicom.ul.pdu", "aiodicom.ul.fsm", "aiodicom.ul.connection", "aiodicom.ul.errors"} <= set(
        result["names"]
    )
    assert not any(m.startswith("aiodicom.aio") for m in result["loaded"]), result["loaded"]
    assert result["forbidden"] == []


def test_the_stub_probe_can_fail() -> None:
    # Guard against a check that cannot fail: the same probe, pointed at the
    # asyncio glue (aiodicom.aio), does see asyncio.
    assert (PACKAGE / "aio" / "__init__.py").exists()
    code = f"PACKAGE_DIR = {str(PACKAGE)!r}\nCORE = ['aio']\nFORBIDDEN = ['asyncio']\n" + CORE_ONLY
    result = run_python(code)
    assert "asyncio" in result["forbidden"]


def _core_sources() -> list[Path]:
    files = [p for sub in CORE_PACKAGES for p in sorted((PACKAGE / sub).rglob("*.py"))]
    assert any(p.name == "connection.py" for p in files)
    return files


def _imported_modules(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call):
            # importlib.import_module("asyncio") / __import__("asyncio")
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.add(arg.value.split(".")[0])
    return found


@pytest.mark.parametrize("path", _core_sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_source_has_no_io_imports(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    assert _imported_modules(tree) & FORBIDDEN_IN_CORE == set()


def test_ast_probe_detects_lazy_imports() -> None:
    tree = ast.parse("def f():\n    import asyncio.events\n    from socket import socket\n    importlib.import_module('ssl')\n")
    assert {"asyncio", "socket", "ssl"} <= _imported_modules(tree)
