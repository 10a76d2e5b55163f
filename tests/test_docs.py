"""The user guide in docs/ and the docstrings of the public API.

Conventions (also stated in docs/index.md):

* A ```python block whose first line is ``# runnable`` is a complete
  program: it must compile as a module (no top-level ``await``).
* ``# runnable, self-contained`` blocks start their own servers on free
  ports; they are also run, in a subprocess, and must exit with status 0.
* Every other ```python block is a fragment: it must parse (top-level
  ``await`` allowed), and every ``aiodicom`` name it imports or uses as
  ``aiodicom.x.y`` must exist.

Docstrings: every name in ``aiodicom.__all__`` and every public class,
function and method defined in the modules listed in :data:`DOCUMENTED`
must have its own docstring (constants: a ``#:`` comment where they are
assigned).
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import os
import re
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

import aiodicom

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PACKAGE = REPO / "aiodicom"

#: Modules whose public classes, functions and methods must have docstrings.
DOCUMENTED = (
    "aio/*.py",
    "services/*.py",
    "events.py",
    "security.py",
    "dataset.py",
    "part10.py",
    "archive/*.py",
    "dimse/*.py",
    "ul/*.py",
)

#: Pages the guide must have (docs/benchmarks.md is written separately).
REQUIRED_PAGES = ("index", "getting-started", "scu", "scp", "archive", "performance", "security")

RUNNABLE = "# runnable"
SELF_CONTAINED = "# runnable, self-contained"


# ---------------------------------------------------------------- the guide


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    source: str

    @property
    def name(self) -> str:
        return f"docs/{self.page}:{self.line}"

    @property
    def first_line(self) -> str:
        return self.source.lstrip("\n").split("\n", 1)[0].strip()

    @property
    def runnable(self) -> bool:
        return self.first_line.startswith(RUNNABLE)

    @property
    def self_contained(self) -> bool:
        return self.first_line == SELF_CONTAINED


_FENCE = re.compile(r"^```([\w+-]*)[^\n]*$")


def _blocks(path: Path) -> list[tuple[str, int, str]]:
    """(language, first line number, source) of every fenced block in *path*."""
    out: list[tuple[str, int, str]] = []
    lang: str | None = None
    start = 0
    body: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        m = _FENCE.match(line)
        if lang is None:
            if m:
                lang, start, body = m.group(1).lower(), number + 1, []
        elif line.startswith("```"):
            out.append((lang, start, "\n".join(body) + "\n"))
            lang = None
        else:
            body.append(line)
    assert lang is None, f"{path.name}: unclosed ``` fence opened at line {start - 1}"
    return out


def _pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def python_blocks() -> list[Block]:
    return [
        Block(page.name, line, src)
        for page in _pages()
        for lang, line, src in _blocks(page)
        if lang in ("python", "py")
    ]


ALL_BLOCKS = python_blocks()
RUNNABLE_BLOCKS = [b for b in ALL_BLOCKS if b.runnable]
SELF_CONTAINED_BLOCKS = [b for b in ALL_BLOCKS if b.self_contained]


def test_the_guide_has_its_pages() -> None:
    missing = [p for p in REQUIRED_PAGES if not (DOCS / f"{p}.md").is_file()]
    assert not missing
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    for page in REQUIRED_PAGES:
        if page != "index":
            assert f"({page}.md)" in index, f"docs/index.md does not link {page}.md"


def test_readme_links_the_guide() -> None:
    assert "docs/index.md" in (REPO / "README.md").read_text(encoding="utf-8")


def test_the_convention_finds_blocks() -> None:
    """Guards against a marker typo silently turning every check off."""
    assert len(ALL_BLOCKS) >= 20
    assert len(RUNNABLE_BLOCKS) >= 4
    pages = {b.page for b in SELF_CONTAINED_BLOCKS}
    assert {"scu.md", "scp.md", "archive.md"} <= pages
    # a "# runnable..." first line that is neither marker is a typo
    for block in ALL_BLOCKS:
        if block.first_line.startswith("# runnable"):
            assert block.first_line in (RUNNABLE, SELF_CONTAINED), block.name


@pytest.mark.parametrize("block", RUNNABLE_BLOCKS, ids=lambda b: b.name)
def test_runnable_block_compiles(block: Block) -> None:
    code = compile(block.source, block.name, "exec")
    assert isinstance(code, types.CodeType)
    tree = ast.parse(block.source)
    # a complete program runs something: a call at module level
    assert any(isinstance(node, (ast.Expr, ast.With, ast.If)) for node in tree.body), block.name


def _module_aliases(tree: ast.AST) -> dict[str, str]:
    """Names bound to aiodicom modules: ``import aiodicom``, ``from aiodicom import events``."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "aiodicom" or a.name.startswith("aiodicom."):
                    if a.asname:
                        aliases[a.asname] = a.name
                    else:
                        aliases["aiodicom"] = "aiodicom"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "aiodicom" or node.module.startswith("aiodicom."):
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    try:
                        importlib.import_module(full)
                    except ImportError:
                        continue
                    aliases[a.asname or a.name] = full
    return aliases


def _attribute_chain(node: ast.Attribute) -> list[str] | None:
    parts: list[str] = []
    cur: ast.expr = node
    while isinstance(cur, ast.Attribute):
        parts.append(cur.attr)
        cur = cur.value
    if not isinstance(cur, ast.Name):
        return None
    parts.append(cur.id)
    return parts[::-1]


def _unresolved_names(tree: ast.AST) -> list[str]:
    problems: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "aiodicom" or a.name.startswith("aiodicom."):
                    try:
                        importlib.import_module(a.name)
                    except ImportError as exc:
                        problems.append(f"import {a.name}: {exc}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "aiodicom" or node.module.startswith("aiodicom."):
                try:
                    module = importlib.import_module(node.module)
                except ImportError as exc:
                    problems.append(f"from {node.module}: {exc}")
                    continue
                for a in node.names:
                    if a.name != "*" and not hasattr(module, a.name):
                        problems.append(f"from {node.module} import {a.name}")
    aliases = _module_aliases(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain = _attribute_chain(node)
        if chain is None or chain[0] not in aliases:
            continue
        obj: object = importlib.import_module(aliases[chain[0]])
        for i, attr in enumerate(chain[1:], 1):
            if isinstance(obj, types.ModuleType):
                module = obj
                try:
                    obj = getattr(module, attr)
                except AttributeError:
                    try:
                        obj = importlib.import_module(f"{module.__name__}.{attr}")
                    except ImportError:
                        problems.append(".".join(chain[: i + 1]))
                        break
            elif inspect.isclass(obj):
                known = hasattr(obj, attr) or attr in getattr(obj, "__dataclass_fields__", {})
                if not known and attr not in getattr(obj, "__annotations__", {}):
                    problems.append(".".join(chain[: i + 1]))
                break
            else:
                break  # an instance: its attributes are not checked statically
    return sorted(set(problems))


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=lambda b: b.name)
def test_python_block_parses_and_its_aiodicom_names_exist(block: Block) -> None:
    tree = compile(
        block.source, block.name, "exec", flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    )
    assert isinstance(tree, ast.Module)
    assert _unresolved_names(tree) == [], block.name


def test_the_name_check_catches_mistakes() -> None:
    tree = ast.parse(
        "import aiodicom\n"
        "from aiodicom import events, NoSuchThing\n"
        "from aiodicom.services.get import GetProgress\n"
        "aiodicom.associate\n"
        "aiodicom.asociate\n"
        "events.subscribe\n"
        "events.subscirbe\n"
        "aiodicom.Server.add_context\n"
        "aiodicom.Server.add_contexts\n"
        "aiodicom.services.find.FindResults.aclose\n"
    )
    assert _unresolved_names(tree) == [
        "aiodicom.Server.add_contexts",
        "aiodicom.asociate",
        "events.subscirbe",
        "from aiodicom import NoSuchThing",
    ]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.parametrize("block", SELF_CONTAINED_BLOCKS, ids=lambda b: b.name)
def test_self_contained_block_runs(block: Block, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(block.source, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"{block.name} failed:\n{proc.stdout}\n{proc.stderr}"


# ------------------------------------------------------------------ links


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors: set[str] = set()
    in_fence = False
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line.startswith("```"):
            in_fence = not in_fence
        elif not in_fence and line.startswith("#"):
            anchors.add(_slug(line.lstrip("#")))
    return anchors


_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return _LINK.findall(text)


def test_relative_links_and_anchors_resolve() -> None:
    broken: list[str] = []
    for page in _pages():
        for target in _links(page):
            if re.match(r"[a-z]+:", target):
                continue  # http(s):, mailto:
            file_part, _, anchor = target.partition("#")
            dest = (page.parent / file_part).resolve() if file_part else page
            if not dest.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def test_slug() -> None:
    assert _slug(" C-FIND matching") == "c-find-matching"
    assert _slug(" The archive: `aiodicom serve`") == "the-archive-aiodicom-serve"


# -------------------------------------------------------------- docstrings


@functools.cache
def _class_docstrings(module_name: str) -> dict[str, str]:
    """Top-level class name -> its docstring as written in the source ('' if none).

    Read from the source because dataclasses and NamedTuples invent a
    ``__doc__`` (their signature) when the class has none.
    """
    module = sys.modules[module_name]
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError):
        return {}
    return {
        node.name: (ast.get_docstring(node) or "").strip()
        for node in tree.body
        if isinstance(node, ast.ClassDef)
    }


def _own_doc(obj: object) -> str:
    """The docstring *obj* itself has (not one inherited or generated)."""
    if isinstance(obj, type):
        written = _class_docstrings(obj.__module__)
        if obj.__qualname__ in written:
            return written[obj.__qualname__]
        doc = obj.__dict__.get("__doc__")
    else:
        doc = getattr(obj, "__doc__", None)
    return doc.strip() if isinstance(doc, str) else ""


def _documented_modules() -> list[str]:
    names: list[str] = []
    for pattern in DOCUMENTED:
        for path in sorted(PACKAGE.glob(pattern)):
            rel = path.relative_to(REPO).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            names.append(".".join(parts))
    return names


def _function_of(member: object) -> object | None:
    if isinstance(member, (staticmethod, classmethod)):
        return member.__func__
    if isinstance(member, property):
        return member.fget
    if isinstance(member, functools.cached_property):
        return member.func
    if inspect.isfunction(member):
        return member
    return None


def undocumented(module_name: str) -> list[str]:
    """Public classes, functions and methods of *module_name* without a docstring."""
    module = importlib.import_module(module_name)
    missing: list[str] = []
    if not (module.__doc__ or "").strip():
        missing.append(f"{module_name} (module)")
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
            continue
        if inspect.isfunction(obj):
            if not _own_doc(obj):
                missing.append(f"{module_name}.{name}")
        elif inspect.isclass(obj):
            if not _own_doc(obj):
                missing.append(f"{module_name}.{name}")
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                func = _function_of(member)
                if func is not None and not _own_doc(func):
                    missing.append(f"{module_name}.{name}.{attr}")
    return missing


def test_documented_modules_are_found() -> None:
    modules = _documented_modules()
    for expected in ("aiodicom.aio.server", "aiodicom.services.get", "aiodicom.events", "aiodicom.ul.pdu",
                     "aiodicom.archive.index", "aiodicom.dimse.commands", "aiodicom.part10", "aiodicom.aio"):
        assert expected in modules


@pytest.mark.parametrize("module_name", _documented_modules())
def test_public_api_has_docstrings(module_name: str) -> None:
    assert undocumented(module_name) == []


def test_the_docstring_check_catches_mistakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "docless_fixture_mod.py").write_text(
        '"""A module."""\n'
        "import os\n"
        "from os.path import join\n"
        "def f():\n    pass\n"
        "def _private():\n    pass\n"
        'class C:\n    """Documented."""\n'
        "    def m(self):\n        pass\n"
        "    @property\n    def p(self):\n        return 1\n"
        '    def ok(self):\n        """Yes."""\n'
        "    def _hidden(self):\n        pass\n"
        "class D:\n    pass\n"
        "import dataclasses\n"
        "@dataclasses.dataclass\nclass E:\n    x: int = 0\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert undocumented("docless_fixture_mod") == [
        "docless_fixture_mod.f",
        "docless_fixture_mod.C.m",
        "docless_fixture_mod.C.p",
        "docless_fixture_mod.D",
        "docless_fixture_mod.E",
    ]


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _constant_documented(name: str) -> bool:
    """Whether an assignment of *name* somewhere in aiodicom has a ``#:`` comment above it."""
    assign = re.compile(rf"^{re.escape(name)}\s*(:[^=]*)?=")
    for path in _sources():
        lines = path.read_text(encoding="utf-8").split("\n")
        for i, line in enumerate(lines):
            if assign.match(line) and i > 0 and lines[i - 1].lstrip().startswith("#:"):
                return True
    return False


@pytest.mark.parametrize("name", sorted(aiodicom.__all__))
def test_every_exported_name_is_documented(name: str) -> None:
    obj = getattr(aiodicom, name)  # also resolves lazily exported names
    if name.startswith("__") and name.endswith("__"):
        assert isinstance(obj, str)  # __version__
    elif inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isfunction(obj):
        assert _own_doc(obj), f"aiodicom.{name} has no docstring"
    else:
        assert _constant_documented(name), f"aiodicom.{name}: no '#:' comment where it is assigned"
