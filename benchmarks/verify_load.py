"""The cost of checking a build's files at load: `Model(root)` with its hashes checked (remembered after the
first load) against sizes only (`check_hashes=False`), each load in a process of its own, the two interleaved.

    python benchmarks/verify_load.py [results/smollm2] [--rounds 8]

Prints both medians and their ratio (target: a verified build loads at most 5 % slower than one checked by
size only).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOAD = ("import sys, time; sys.path.insert(0, {repo!r}); from nitro.runtime import Model; start = time.perf_counter(); "
        "Model({root!r}, check_hashes={hashes}); print(time.perf_counter() - start)")


def load_s(root: Path, hashes: bool) -> float:
    code = LOAD.format(repo=str(REPO), root=str(root), hashes=hashes)
    return float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                text=True).stdout.split()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, nargs="?", default=REPO / "results/smollm2")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args(argv)
    first = load_s(args.root, True)  # hashes every file once, then remembers them
    times = {True: [], False: []}
    for _ in range(args.rounds):
        for hashes in (True, False):
            times[hashes].append(load_s(args.root, hashes))
    verified, sizes = statistics.median(times[True]), statistics.median(times[False])
    print(f"{args.root}: first load (hashing) {first * 1000:.0f} ms")
    print(f"{'check':<28}{'median ms':>10}  rounds")
    for hashes, label in ((True, "sha256 (remembered)"), (False, "sizes only")):
        print(f"{label:<28}{statistics.median(times[hashes]) * 1000:>10.0f}  "
              f"{' '.join(f'{t * 1000:.0f}' for t in times[hashes])}")
    ratio = verified / sizes
    print(f"verified / sizes only = {ratio:.3f} (target <= 1.05: {'met' if ratio <= 1.05 else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
