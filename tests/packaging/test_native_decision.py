"""Where the native core is built: setup.py's decision, run for interpreters
this machine does not have (a newer CPython, a free-threaded build, PyPy,
Windows, macOS). Outside the supported range the package installs
pure-Python, never failing the build, and native_unavailable_reason() says why.

No __init__.py here on purpose: see test_release_installed.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sigprof._native_support import NATIVE_PYTHONS, unsupported_reason

SETUP_PY = Path(__file__).resolve().parents[2] / "setup.py"
OLDEST, NEWEST = NATIVE_PYTHONS

# setup.py under a pretend interpreter: sys and sysconfig say what the case
# says; setuptools and Cython are stand-ins that record what setup() was given
# (the decision is under test, not the build).
PRETEND = r"""
import json, runpy, sys, sysconfig, types

case = json.loads(sys.argv[1])
captured = {}
setuptools = types.ModuleType("setuptools")
setuptools.setup = lambda **kwargs: captured.update(kwargs)
setuptools.Extension = lambda name, **kwargs: name
cython, cython_build = types.ModuleType("Cython"), types.ModuleType("Cython.Build")
cython_build.cythonize = lambda extensions, **options: extensions
sys.modules.update({"setuptools": setuptools, "Cython": cython, "Cython.Build": cython_build})

sysconfig.get_config_vars()  # cached now: it reads a per-platform module
real_config_var = sysconfig.get_config_var
sysconfig.get_config_var = lambda name: (
    int(case["gil_disabled"]) if name == "Py_GIL_DISABLED" else real_config_var(name)
)
implementation = types.SimpleNamespace(**vars(sys.implementation))
implementation.name = case["implementation"]
sys.implementation = implementation
sys.platform = case["platform"]
sys.version_info = (case["version"][0], case["version"][1], 0, "final", 0)
runpy.run_path("setup.py", run_name="__main__")
print(json.dumps(captured.get("ext_modules") or []))
"""


def run_setup_py(
    platform: str, implementation: str, version: tuple[int, int], gil_disabled: bool,
    no_native: bool = False,
) -> tuple[list[str], str]:
    """The extensions setup.py would build there, and what it printed."""
    if not SETUP_PY.is_file():
        pytest.skip("testing an installed wheel: no setup.py beside the tests")
    case = {"platform": platform, "implementation": implementation, "version": version,
            "gil_disabled": gil_disabled}
    env = {key: value for key, value in os.environ.items() if key != "SIGPROF_NO_NATIVE"}
    if no_native:
        env["SIGPROF_NO_NATIVE"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", PRETEND, json.dumps(case)], cwd=SETUP_PY.parent, env=env,
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    extensions: list[str] = json.loads(result.stdout.splitlines()[-1])
    return extensions, result.stderr


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_core_built_on_supported_linux_cpython(version: tuple[int, int]) -> None:
    extensions, printed = run_setup_py("linux", "cpython", version, gil_disabled=False)
    assert extensions == ["sigprof._native"]
    assert "without the native core" not in printed


@pytest.mark.parametrize(
    ("platform", "implementation", "version", "gil_disabled", "named"),
    [
        ("linux", "cpython", (NEWEST[0], NEWEST[1] + 1), False,
         f"this is {NEWEST[0]}.{NEWEST[1] + 1}"),
        ("linux", "cpython", NEWEST, True, "free-threaded"),
        ("linux", "pypy", (3, 10), False, "needs CPython; this is pypy"),
        ("win32", "cpython", NEWEST, False, "needs Linux; this is win32"),
        ("darwin", "cpython", NEWEST, False, "needs Linux; this is darwin"),
    ],
)
def test_pure_python_elsewhere_naming_why(
    platform: str, implementation: str, version: tuple[int, int], gil_disabled: bool, named: str
) -> None:
    extensions, printed = run_setup_py(platform, implementation, version, gil_disabled)
    assert extensions == []
    reason = unsupported_reason(platform, implementation, version, gil_disabled)
    assert reason is not None and named in reason
    assert f"installing without the native core: {reason}" in printed


def test_no_native_environment_variable_builds_pure_python() -> None:
    extensions, printed = run_setup_py("linux", "cpython", NEWEST, False, no_native=True)
    assert extensions == []
    assert "installing without the native core: SIGPROF_NO_NATIVE=1" in printed


def test_supported_interpreters_have_no_reason() -> None:
    for minor in range(OLDEST[1], NEWEST[1] + 1):
        assert unsupported_reason("linux", "cpython", (3, minor), False) is None
    assert unsupported_reason("linux", "cpython", (OLDEST[0], OLDEST[1] - 1), False) is not None
