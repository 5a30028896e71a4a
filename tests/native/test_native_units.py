"""The Python-free parts of the C core, driven directly: built with gcc under
AddressSanitizer and UndefinedBehaviorSanitizer, and run."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
HERE = Path(__file__).parent

UNITS = {
    "ring_buffer_stress": ["ring_buffer.c"],
    "hash_map_random": ["hash_map.c"],
}


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
@pytest.mark.skipif(not CSRC.is_dir(), reason="needs the source tree (csrc/)")
@pytest.mark.parametrize("unit", sorted(UNITS))
def test_native_unit(unit, tmp_path):
    binary = tmp_path / unit
    sources = [str(HERE / f"{unit}.c")] + [str(CSRC / name) for name in UNITS[unit]]
    subprocess.run(
        ["gcc", "-std=gnu11", "-O1", "-g", "-Wall", "-Wextra", "-Werror",
         "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer",
         f"-I{CSRC}", *sources, "-o", str(binary), "-lpthread"],
        check=True,
    )
    result = subprocess.run([str(binary)], check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
