"""``python -m decoding ...``: the command line (see :mod:`decoding.cli` and docs/cli.md)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
