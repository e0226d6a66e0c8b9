"""Where a finished run's job time went: jobs and seconds per rule, from Snakemake's per-job
benchmark files (logs/benchmarks/<rule>/...tsv; older runs: benchmarks/<rule>/...tsv).

    python benchmarks/job_times.py [WORKDIR]

Each benchmark file holds one job's wall-clock seconds (``s``) and peak memory (``max_rss``, MB).
The sum of the seconds over all jobs is the job time the run's cores shared; with 2 cores the
run takes about half of it, plus Snakemake's own scheduling.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path


def job_times(workdir: Path) -> dict[str, list[float]]:
    found: dict[str, list[float]] = defaultdict(list)
    for root in (workdir / "logs" / "benchmarks", workdir / "benchmarks"):
        if not root.is_dir():
            continue
        for tsv in root.rglob("*.tsv"):
            with open(tsv, newline="") as fh:
                rows = list(csv.DictReader(fh, delimiter="\t"))
            if rows:
                found[tsv.relative_to(root).parts[0]].append(float(rows[-1]["s"]))
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", nargs="?", default=".", type=Path,
                        help="the run's working directory (default: the current one)")
    workdir = parser.parse_args(argv).workdir
    found = job_times(workdir)
    if not found:
        raise SystemExit(f"{workdir}: no benchmark files under logs/benchmarks/ or benchmarks/")
    print(f"{'rule':22} {'jobs':>5} {'seconds':>9} {'mean s':>7}")
    total_jobs = total_s = 0
    for rule, seconds in sorted(found.items(), key=lambda kv: -sum(kv[1])):
        print(f"{rule:22} {len(seconds):>5} {sum(seconds):>9.0f} {sum(seconds) / len(seconds):>7.2f}")
        total_jobs, total_s = total_jobs + len(seconds), total_s + sum(seconds)
    print(f"{'benchmarked jobs':22} {total_jobs:>5} {total_s:>9.0f}")


if __name__ == "__main__":
    main()
