"""Parts of the C core driven directly, without an interpreter running: built
with gcc under AddressSanitizer and UndefinedBehaviorSanitizer, and run."""

import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
HERE = Path(__file__).parent

# unit: (core sources, whether it needs this interpreter's headers and library)
UNITS = {
    "ring_buffer_stress": (["ring_buffer.c"], False),
    "hash_map_random": (["hash_map.c"], False),
    # frame layouts are this interpreter's; &PyCode_Type comes from libpython
    "frame_walk_freed": (["frame_walk.c"], True),
}


def python_flags() -> list:
    config = sysconfig.get_config_var
    if not config("Py_ENABLE_SHARED"):
        pytest.skip("needs an interpreter built with --enable-shared (it links libpython)")
    return [f"-I{sysconfig.get_paths()['include']}", f"-L{config('LIBDIR')}",
            f"-lpython{config('LDVERSION')}", f"-Wl,-rpath,{config('LIBDIR')}"]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
@pytest.mark.skipif(not CSRC.is_dir(), reason="needs the source tree (csrc/)")
@pytest.mark.parametrize("unit", sorted(UNITS))
def test_native_unit(unit, tmp_path):
    core_sources, needs_python = UNITS[unit]
    binary = tmp_path / unit
    sources = [str(HERE / f"{unit}.c")] + [str(CSRC / name) for name in core_sources]
    subprocess.run(
        ["gcc", "-std=gnu11", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-fno-strict-aliasing",
         "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer",
         f"-I{CSRC}", *sources, *(python_flags() if needs_python else []),
         "-o", str(binary), "-lpthread"],
        check=True,
    )
    result = subprocess.run([str(binary)], check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
