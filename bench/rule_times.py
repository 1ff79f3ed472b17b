"""Per-rule wall times from Snakemake's `benchmark:` files (the numbers the README quotes).

    .venv/bin/python bench/rule_times.py [--scale tiny] [--since "2026-11-29 20:37"] [--markdown]

Reads benchmarks/<scale>/<rule>/**.tsv (one file per job, written by Snakemake when the job
ends) and prints, per rule, the number of jobs, the min / mean / max wall seconds and their
sum, then the total. `--since` keeps only files written after that time (one run's jobs).
The sum is serial job time: with one-thread jobs side by side (profiles/laptop), the wall
time of the run is shorter. The last line gives that wall time as the benchmark files see it:
from the first job's start (its file's time less its seconds) to the last job's end, the time
with at least one job running (shorter when the run was stopped and resumed: the pauses drop
out), and the number of jobs in flight on average over that time (2.0 means both cores of the
laptop profile busy throughout).
"""

from __future__ import annotations

import argparse
import csv
from datetime import datetime
from pathlib import Path

Job = tuple[Path, float, float]  # (benchmark file, end time, wall seconds)


def read_jobs(root: Path, since: float = 0.0) -> list[Job]:
    """(path, end time, wall seconds) of each benchmark file under `root` written after `since`."""
    jobs = []
    for path in sorted(root.rglob("*.tsv")):
        end = path.stat().st_mtime
        if end < since:
            continue
        with path.open() as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        if rows:
            jobs.append((path, end, float(rows[-1]["s"])))
    return jobs


def read_times(root: Path, since: float = 0.0, jobs: list[Job] | None = None) -> dict[str, list[tuple[str, float]]]:
    """{rule: [(job, wall seconds), ...]} of the benchmark files under `root` written after `since`
    (or of `jobs`, read before by `read_jobs(root, ...)`)."""
    times: dict[str, list[tuple[str, float]]] = {}
    for path, _, seconds in read_jobs(root, since) if jobs is None else jobs:
        rel = path.relative_to(root).with_suffix("")
        # <rule>/<wildcards...>.tsv, or <rule>.tsv for a rule without wildcards (prepare_data)
        rule, job = (rel.parts[0], str(rel.relative_to(rel.parts[0]))) if len(rel.parts) > 1 else (rel.name, "")
        times.setdefault(rule, []).append((job, seconds))
    return times


def wall_span(jobs: list[Job]) -> tuple[float, float, float]:
    """(seconds from the first job's start to the last job's end, seconds with at least one job
    running, serial job seconds) of `jobs`: a run's wall time, the same without the pauses of a
    stopped-and-resumed run, and with the ratio of the last two, its parallelism."""
    intervals = sorted((end - seconds, end) for _, end, seconds in jobs)
    if not intervals:
        return 0.0, 0.0, 0.0
    busy, (cur_start, cur_end) = 0.0, intervals[0]
    for start, end in intervals[1:]:
        if start > cur_end:  # a gap: close the current stretch of work
            busy, cur_start = busy + cur_end - cur_start, start
        cur_end = max(cur_end, end)
    busy += cur_end - cur_start
    span = max(e for _, e in intervals) - intervals[0][0]
    return span, busy, sum(seconds for _, _, seconds in jobs)


def table(times: dict[str, list[tuple[str, float]]], markdown: bool = False) -> str:
    header = ("rule", "jobs", "min s", "mean s", "max s", "sum min")
    rows = []
    for rule, jobs in sorted(times.items(), key=lambda kv: -sum(s for _, s in kv[1])):
        secs = [s for _, s in jobs]
        rows.append((rule, str(len(secs)), f"{min(secs):.0f}", f"{sum(secs) / len(secs):.0f}", f"{max(secs):.0f}",
                     f"{sum(secs) / 60:.1f}"))
    total = sum(s for jobs in times.values() for _, s in jobs)
    rows.append(("total", str(sum(len(j) for j in times.values())), "", "", "", f"{total / 60:.1f}"))
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                     for r in (header, *rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="tiny")
    parser.add_argument("--root", default="benchmarks", help="Snakemake benchmark directory (default: benchmarks)")
    parser.add_argument("--since", default="", help='only files written after this local time, "YYYY-MM-DD HH:MM"')
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    root = Path(args.root) / args.scale
    if not root.is_dir():
        raise SystemExit(f"no benchmark files: {root} does not exist (run the pipeline first)")
    since = datetime.strptime(args.since, "%Y-%m-%d %H:%M").timestamp() if args.since else 0.0
    jobs = read_jobs(root, since)
    times = read_times(root, jobs=jobs)
    if not times:
        raise SystemExit(f"no benchmark files under {root}" + (f" written after {args.since}" if since else ""))
    print(table(times, args.markdown))
    span, busy, serial = wall_span(jobs)
    print(f"wall {span / 60:.1f} min from the first job's start to the last job's end, {busy / 60:.1f} min "
          f"of it with a job running; {serial / busy if busy else 0:.2f} jobs in flight on average")


if __name__ == "__main__":
    main()
