"""Names for raw frames: the function's qualified name and the module a file
belongs to.

CPython 3.11+ code objects carry ``co_qualname``; 3.9 and 3.10 do not, so for
those this module indexes every function, method, nested function and class
reachable from the loaded modules by (filename, first line, name) and looks
the qualified name up there. Frames it cannot find keep ``co_name``, which is
what sentry-sdk itself shows for a plain function.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterable

CodeKey = tuple[str, int, str]

_CO_OPTIMIZED = 0x0001  # set for function bodies, not for class bodies


class ModuleIndex:
    """Maps a code object's filename to the name of the module it came from."""

    def __init__(self) -> None:
        self._by_file: dict[str, str] = {}
        self._modules_seen = 0

    def module_for(self, filename: str) -> str | None:
        found = self._by_file.get(filename)
        if found is None and len(sys.modules) != self._modules_seen:
            self._rebuild()
            found = self._by_file.get(filename)
        return found

    def _rebuild(self) -> None:
        self._modules_seen = len(sys.modules)
        by_file: dict[str, str] = {}
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None)
            if not isinstance(path, str):
                continue
            if path.endswith((".pyc", ".pyo")):
                path = path[:-1]
            by_file.setdefault(path, name)
            by_file.setdefault(os.path.abspath(path), name)
        main = sys.modules.get("__main__")
        main_path = getattr(main, "__file__", None)
        if isinstance(main_path, str):
            by_file[main_path] = "__main__"
            by_file[os.path.abspath(main_path)] = "__main__"
        self._by_file = by_file


class QualnameIndex:
    """Qualified names of code objects on interpreters without co_qualname."""

    def __init__(self) -> None:
        self._names: dict[CodeKey, str] = {}
        self._walked: set[str] = set()

    def qualname(self, filename: str, first_lineno: int, name: str) -> str:
        key = (filename, first_lineno, name)
        found = self._names.get(key)
        if found is None and len(self._walked) != len(sys.modules):
            self._walk_new_modules()
            found = self._names.get(key)
        return found if found is not None else name

    def _walk_new_modules(self) -> None:
        for module_name, module in list(sys.modules.items()):
            if module_name in self._walked:
                continue
            self._walked.add(module_name)
            namespace = getattr(module, "__dict__", None)
            if isinstance(namespace, dict):
                self._walk_namespace(namespace.values(), module_name, set())

    def _walk_namespace(self, values: Iterable[object], module_name: str, seen: set[int]) -> None:
        for value in list(values):
            if id(value) in seen:
                continue
            seen.add(id(value))
            function = _function_of(value)
            if function is not None:
                self._add_function(function, module_name)
            elif isinstance(value, type) and value.__module__ == module_name:
                self._walk_namespace(vars(value).values(), module_name, seen)

    def _add_function(self, function: types.FunctionType, module_name: str) -> None:
        # functools.wraps copies the wrapped function's __qualname__ onto the
        # wrapper: that name belongs to the innermost function, whose code is
        # reached through __wrapped__; the wrapper's own code is named where
        # it was defined (deco.<locals>.wrapper), by the walk of its parent.
        wrapped = getattr(function, "__wrapped__", None)
        while isinstance(wrapped, types.FunctionType) and hasattr(wrapped, "__wrapped__"):
            wrapped = getattr(wrapped, "__wrapped__", None)
        if isinstance(wrapped, types.FunctionType):
            self._add_code(wrapped.__code__, wrapped.__qualname__)
        elif getattr(function, "__module__", None) == module_name:
            self._add_code(function.__code__, function.__qualname__)

    def _add_code(self, code: types.CodeType, qualname: str) -> None:
        self._names.setdefault((code.co_filename, code.co_firstlineno, code.co_name), qualname)
        is_function = bool(code.co_flags & _CO_OPTIMIZED)
        prefix = qualname + (".<locals>." if is_function else ".")
        for constant in code.co_consts:
            if isinstance(constant, types.CodeType):
                self._add_code(constant, prefix + constant.co_name)


def _function_of(value: object) -> types.FunctionType | None:
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    elif isinstance(value, property):
        value = value.fget
    return value if isinstance(value, types.FunctionType) else None
