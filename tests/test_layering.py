"""The sans-I/O core under ``trio_pop3/_proto/`` never imports trio (STYLE.md §2-3).

The check reads each module's AST, so it catches imports inside functions and
``if TYPE_CHECKING`` blocks too, and needs no import of the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import trio_pop3

PROTO = Path(trio_pop3.__file__).parent / "_proto"
MODULES = sorted(PROTO.glob("*.py"))

#: Top-level packages the core may never import.
FORBIDDEN = {"trio", "outcome", "sniffio", "anyio", "asyncio", "socket", "ssl"}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Return (line, absolute-or-relative module name) for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, "." * node.level + (node.module or "")))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr)
            in ("__import__", "import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def test_proto_modules_found() -> None:
    names = {p.name for p in MODULES}
    assert {"_commands.py", "_receivebuffer.py", "_wire.py", "_state.py", "_maildrop.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_proto_does_not_import_io(path: Path) -> None:
    for line, name in imported_modules(path):
        if name.startswith("."):
            # Relative imports must stay inside _proto: "..x" reaches the I/O layers.
            assert not name.startswith(".."), f"{path.name}:{line} imports {name} outside _proto"
            continue
        top = name.split(".")[0]
        assert top not in FORBIDDEN, f"{path.name}:{line} imports {name}"
        assert top != "trio_pop3" or name.startswith("trio_pop3._proto"), (
            f"{path.name}:{line} imports {name}"
        )


def test_checker_catches_trio(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import os\n"
        "def f():\n"
        "    import trio.testing\n"
        "from trio import sleep\n"
        "from .. import _session\n"
        "importlib.import_module('trio')\n"
    )
    names = [name for _, name in imported_modules(bad)]
    assert sorted(names) == ["..", "os", "trio", "trio", "trio.testing"]
