"""``python -m pipeline``: the same command line as ``python -m pipeline.submit``."""

from __future__ import annotations

import sys

from pipeline.cli.commands import main

if __name__ == "__main__":
    sys.exit(main())
