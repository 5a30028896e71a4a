"""``python -m sigprof``: the same as the ``sigprof`` command."""

import sys

from sigprof.local.cli import main

if __name__ == "__main__":
    sys.exit(main())
