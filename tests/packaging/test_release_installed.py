"""The installed package keeps its packaging promises (issue 7).

Fast, and run everywhere the suite runs: in the dev environment, by
scripts/check_release.sh against the repaired wheel, and by cibuildwheel
against every built wheel (Linux and macOS). With SIGPROF_EXPECT_INSTALLED=1
(set by those two) sigprof must come from site-packages, not the source tree.

No __init__.py here on purpose: a package named ``packaging`` under tests/
could shadow the real ``packaging`` library that pytest imports.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest

import sigprof
from sigprof._native_support import this_interpreter_unsupported_reason

PACKAGE_DIR = Path(sigprof.__file__).resolve().parent


def _native_expected() -> bool:
    return this_interpreter_unsupported_reason() is None


def _dist():
    try:
        return distribution("sigprof")
    except PackageNotFoundError:
        pytest.skip("sigprof is imported from a path, not installed as a distribution")


def test_imported_from_site_packages_when_testing_a_wheel():
    if os.environ.get("SIGPROF_EXPECT_INSTALLED") != "1":
        pytest.skip("only when testing an installed wheel (SIGPROF_EXPECT_INSTALLED=1)")
    site_dirs = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
    assert PACKAGE_DIR.parent in site_dirs, (
        f"sigprof imported from {PACKAGE_DIR}, not site-packages"
    )


def test_version_is_single_sourced():
    dist = _dist()
    assert dist.version == sigprof.__version__


def test_typed():
    assert (PACKAGE_DIR / "py.typed").is_file()


def test_licence_in_metadata():
    dist = _dist()
    if (
        dist.metadata.get("License-Expression") is None
        and os.environ.get("SIGPROF_EXPECT_INSTALLED") != "1"
    ):
        pytest.skip("an older setuptools in the dev environment wrote no License-Expression")
    assert dist.metadata["License-Expression"] == "MIT"


def test_native_sampler_where_expected():
    reason = sigprof.native_unavailable_reason()
    if _native_expected():
        assert reason is None, f"native sampler unavailable on Linux CPython: {reason}"
        from sigprof import _native

        assert Path(_native.__file__).resolve().parent == PACKAGE_DIR
    else:
        assert isinstance(reason, str) and reason


def test_fallback_contract_without_native():
    """Where native sampling cannot run, the package still imports, says why,
    refuses to start with NativeUnavailable, and stop() is harmless."""
    if sigprof.native_unavailable_reason() is None:
        pytest.skip("native sampling is available here")
    sampler = sigprof.Sampler()
    with pytest.raises(sigprof.NativeUnavailable):
        sampler.start()
    sampler.stop()
    assert not sampler.running


def test_sampler_round_trip():
    if sigprof.native_unavailable_reason() is not None:
        pytest.skip(sigprof.native_unavailable_reason())
    sampler = sigprof.Sampler(frequency=100)
    with sampler:
        pass
    assert not sampler.running
    sampler.samples()


def test_console_script_version():
    command = shutil.which("sigprof", path=str(Path(sys.executable).parent))
    if command is None:
        pytest.skip("no sigprof console script next to this interpreter")
    out = subprocess.run(
        [command, "--version"], check=False, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert sigprof.__version__ in out.stdout + out.stderr


def test_python_dash_m_version():
    out = subprocess.run(
        [sys.executable, "-m", "sigprof", "--version"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert sigprof.__version__ in out.stdout + out.stderr
