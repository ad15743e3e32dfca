"""``python -m pipeline.submit``: the command line (see :mod:`pipeline.cli`).

python -m pipeline.submit --stack ArrayJobPipeline --array-size 100 --watch
python -m pipeline.submit status RUN_ID --stack ArrayJobPipeline
python -m pipeline.submit --local
"""

from __future__ import annotations

import sys

from pipeline.cli.commands import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
