"""The package's layout as a rule: one core, wings over it, arrows one way.

Every `import` in src/sigprof (at module level, inside functions, under
TYPE_CHECKING alike) is read with ast and checked against ALLOWED, so a new
import against the grain fails here instead of rotting the layout."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "sigprof"

# package -> the sigprof packages it may import (besides itself). `sigprof`
# is the top-level module (its __version__, __file__ and core names);
# `_native` the compiled bridge, `_native_support` the interpreters it is built
# for (a dependency-free module setup.py reads too).
ALLOWED: dict[str, set[str]] = {
    "core": {"_native", "_native_support"},
    # formats: the bridge's chunk sample writer when it is there
    "formats": {"sigprof", "core", "_native"},
    "chunks": {"sigprof", "core", "formats"},
    "local": {"sigprof", "core", "formats", "chunks"},
    "sentry": {"sigprof", "core", "formats", "chunks"},
    # the facade: core eagerly, the Sentry wing by name on first use
    "sigprof": {"core", "sentry", "local"},
}
# Only the Sentry wing may import sentry_sdk.
MAY_IMPORT_SENTRY_SDK = {"sentry"}


def _package_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else "sigprof"


def _imported_modules(tree: ast.AST, path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path}:{node.lineno}: relative import; write it absolute")
            module = node.module or ""
            if module == "sigprof":
                # `from sigprof import formats` names a package, `_native` the bridge
                found.extend((node.lineno, f"sigprof.{alias.name}") for alias in node.names)
            else:
                found.append((node.lineno, module))
    return found


def _sigprof_part(module: str) -> str | None:
    """The sigprof package a module name points into, or None for others."""
    parts = module.split(".")
    if parts[0] != "sigprof":
        return None
    if len(parts) == 1:
        return "sigprof"
    if (PACKAGE / parts[1]).is_dir() or parts[1] in ("_native", "_native_support"):
        return parts[1]
    return "sigprof"  # a name of the top-level module (`from sigprof import Frame`)


def _lazy_targets(tree: ast.AST) -> list[str]:
    """Module paths named as strings in the facade's lazy table."""
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.startswith("sigprof.")
        and " " not in node.value
    ]


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_package_is_ruled() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(ALLOWED) - {"sigprof"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_one_way(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    own = _package_of(path)
    wrong = []
    for line, module in _imported_modules(tree, path):
        top = module.split(".")[0]
        if top == "sentry_sdk" and own not in MAY_IMPORT_SENTRY_SDK:
            wrong.append(f"line {line}: {module} (only sentry/ imports sentry_sdk)")
        part = _sigprof_part(module)
        if part is not None and part != own and part not in ALLOWED[own]:
            wrong.append(f"line {line}: {module} ({own} may import {sorted(ALLOWED[own])})")
    for target in _lazy_targets(tree) if path == PACKAGE / "__init__.py" else ():
        part = _sigprof_part(target)
        if part is not None and part != own and part not in ALLOWED[own]:
            wrong.append(f"lazy {target} ({own} may import {sorted(ALLOWED[own])})")
    assert not wrong, f"{path.relative_to(PACKAGE)} imports against the arrows:\n" + "\n".join(wrong)


def test_the_rule_catches_a_wrong_arrow(tmp_path: Path) -> None:
    # The checker itself: a local module importing the Sentry wing is found.
    tree = ast.parse("from sigprof.sentry import integration\nimport sentry_sdk\n")
    modules = [module for _, module in _imported_modules(tree, tmp_path / "x.py")]
    assert [_sigprof_part(m) for m in modules] == ["sentry", None]
    assert "sentry" not in ALLOWED["local"] and "local" not in ALLOWED["sentry"]
    assert not ALLOWED["formats"] & {"sentry", "local", "chunks"}
