"""`import sigprof` and `sigprof run` load no part of sentry-sdk: a profiled
program sees only the modules it imports itself (sentry-sdk drags in about
300 modules and, with them, import-order effects such as pytest's
assertion-rewriting warning for anyio)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import needs_native, sigprof_cli, write_script

PRINT_MODULES = """
import json, sys
with open(sys.argv[1], "w") as out:
    json.dump(sorted(sys.modules), out)
"""


def _sentry_modules(names: list[str]) -> list[str]:
    return [name for name in names if name == "sentry_sdk" or name.startswith("sentry_sdk.")]


def test_import_sigprof_loads_no_sentry_sdk(tmp_path: Path) -> None:
    code = "import json, sys, sigprof; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        check=True,
    )
    modules = json.loads(result.stdout)
    assert "sigprof" in modules
    assert _sentry_modules(modules) == []


def test_sentry_names_resolve_on_first_use(tmp_path: Path) -> None:
    # The lazy names are the real ones, and asking for one loads sentry-sdk.
    code = (
        "import sys, sigprof\n"
        "assert 'sentry_sdk' not in sys.modules\n"
        "from sigprof.sentry.integration import init\n"
        "assert sigprof.init is init and 'sentry_sdk' in sys.modules\n"
        "assert 'profile' in dir(sigprof)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, timeout=120, check=True)


@needs_native
def test_sigprof_run_loads_no_sentry_sdk(tmp_path: Path) -> None:
    write_script(tmp_path / "prog.py", PRINT_MODULES)
    seen = tmp_path / "modules.json"
    result = sigprof_cli(
        "run", "--format", "collapsed", "-o", "out.txt", "prog.py", str(seen), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    modules = json.loads(seen.read_text())
    assert "sigprof.local.cli" in modules  # it did run under sigprof
    assert _sentry_modules(modules) == []
