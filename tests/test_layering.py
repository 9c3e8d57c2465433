"""The package's shape, checked: no module reads another class's private attributes (STYLE.md, issue #16).

A private attribute (`obj._name`) belongs to the class that defines it; another module that reads it breaks
silently when that class changes (or, for another library, on an upgrade). The scan reads every module of
the package with `ast` and fails on `obj._name` (or `getattr(obj, "_name")`, or `from .x import _name`)
where `obj` is not `self`/`cls`/`super()` and no class or function of the same module defines `_name`.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "smtplab"

# "path:expression" of each read the scan must let through, with the reason. Keep it empty if you can:
# give the owner a public method or property instead.
ALLOWED: dict[str, str] = {}


def _defined_private(tree: ast.AST) -> set[str]:
    """Private names a module defines: its functions, classes and module globals, and `self._x =` attributes."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) \
                and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            names.add(node.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
            if any(isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets):
                names.update(c.value for c in ast.walk(node.value)
                             if isinstance(c, ast.Constant) and isinstance(c.value, str))
    return {name for name in names if _private(name)}


def _private(name: str) -> bool:
    # `_repr_html_` and its kind are IPython's public display protocol, not private attributes.
    return name.startswith("_") and not name.startswith("__") and not name.endswith("_")


def _own(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id in ("self", "cls")
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def private_reads(source: str) -> list[tuple[int, str]]:
    """(line, expression) of each private name of another module that `source` reads."""
    tree = ast.parse(source)
    mine = _defined_private(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr) and not _own(node.value) \
                and node.attr not in mine:
            found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ("getattr", "setattr", "hasattr") and len(node.args) >= 2 \
                and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str) \
                and _private(node.args[1].value) and not _own(node.args[0]) and node.args[1].value not in mine:
            found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.ImportFrom):
            found.extend((node.lineno, f"from {'.' * node.level}{node.module or ''} import {alias.name}")
                         for alias in node.names if _private(alias.name))
    return found


def test_no_module_reads_another_class_private_attributes() -> None:
    found = [f"{path.relative_to(PACKAGE.parent)}:{line}: {expression}"
             for path in sorted(PACKAGE.rglob("*.py")) for line, expression in private_reads(path.read_text())
             if f"{path.relative_to(PACKAGE.parent)}:{expression}" not in ALLOWED]
    assert not found, "give the owner a public method or property:\n" + "\n".join(found)


def test_the_scan_finds_what_it_must() -> None:
    source = ("from .lab import _helper\n"
              "def f(lab, host):\n"
              "    lab._call(1)\n"
              "    getattr(host, '_servers')\n"
              "    self._mine = 1\n"
              "    super()._init()\n")
    assert sorted(line for line, _ in private_reads(source)) == [1, 3, 4]
