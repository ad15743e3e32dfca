"""JobC's peak memory over the size of the object it measures.

For each size, this process compresses one object as JobB would (bzip2 -9, to a temporary
file); a fresh interpreter then loads the default memory step and measures the object with
its streaming code (``measure_compressed``), reading the file in 1 MiB chunks as JobC stages
it. The child reports its peak resident set (``ru_maxrss``) before and after the measurement, so
nothing but the measurement is in the growth; the growth over the object size is printed side
by side for each size.

What this hides: the baseline (an interpreter with JobC's modules loaded) is the same in every
row and is reported apart; S3 and DynamoDB clients are not in the measurement (they hold
connection buffers, not objects), and JobC runs eight such measurements at once in one
process, so its bound is eight times the growth shown here.

    python bench/jobc_memory.py            # 8 MiB and 128 MiB objects
    python bench/jobc_memory.py 16 1024    # sizes in MiB
"""

from __future__ import annotations

import bz2
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[3])
from pipeline.jobs.default_steps import CHUNK, measure_compressed

before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with open(sys.argv[1], "rb") as source:
    stats = measure_compressed(iter(lambda: source.read(CHUNK), b""))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert stats["size"] == int(sys.argv[2]), stats
print(json.dumps({"before_kib": before, "after_kib": after}))
"""


def compressed_object(size: int, path: Path) -> None:
    """``size`` bytes: a MiB of noise repeated with a counter (compressible, like real data)."""
    compressor = bz2.BZ2Compressor(9)
    pattern = os.urandom(1024 * 1024)
    with path.open("wb") as out:
        for block in range(size // len(pattern)):
            out.write(compressor.compress(pattern[:-8] + block.to_bytes(8, "big")))
        out.write(compressor.flush())


def measure(size_mib: int) -> dict[str, int]:
    size = size_mib * 1024 * 1024
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "object.bz2"
        compressed_object(size, path)
        result = subprocess.run(
            [sys.executable, "-c", CHILD, str(path), str(size), str(REPO)],
            capture_output=True,
            text=True,
            check=True,
        )
    return dict(json.loads(result.stdout))


def main(argv: list[str]) -> None:
    sizes = [int(a) for a in argv] or [8, 128]
    print("JobC peak resident memory while measuring one object (fresh interpreter each):")
    rows = []
    for size in sizes:
        m = measure(size)
        growth = max(m["after_kib"] - m["before_kib"], 0) / 1024
        rows.append((size, m["before_kib"] / 1024, growth))
        print(
            f"  object {size:>6,} MiB: baseline {m['before_kib'] / 1024:6.1f} MiB, growth while "
            f"measuring {growth:6.1f} MiB = {growth / size:.4f} of the object"
        )
    if len(rows) > 1:
        small, large = rows[0], rows[-1]
        print(
            f"  object {large[0] / small[0]:g}x larger -> growth "
            f"{(large[2] + 1) / (small[2] + 1):.2f}x (+1 MiB each, so a zero growth divides); "
            "flat means memory does not grow with the object"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
