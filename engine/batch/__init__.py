"""``python -m engine batch``: many fit, evolve or morph jobs, one after another or as Ray tasks.

```
python -m engine batch fit MESH_OR_DIR... -o OUT [fit options] [--ray auto|ADDRESS] [--cpus-per-job C] [--gpus-per-job G]
python -m engine batch evolve JOBS.json -o OUT [--ray ...] [--cpus-per-job C] [--gpus-per-job G]
python -m engine batch morph JOBS.json -o OUT [--ray ...] [--cpus-per-job C] [--gpus-per-job G]
```

- Each job is one command line of ``python -m engine`` (`engine.batch.jobs`: a fit per mesh file, or a JSON entry
  per evolve or morph) and writes what that command writes, into ``OUT/<name>``; ``OUT/summary.json`` lists every
  job (``name``, ``input``, ``status`` "ok" | "error" | "cancelled" (| "pending" while the batch runs),
  ``seconds``, ``cpu_seconds``, ``metrics``: the job's metrics.json or times.json, or ``error``: its message (and a
  ``traceback`` for an error the engine does not expect), ``settings``: the job's params but its input paths) and a
  table goes to stdout. It is replaced whole after every job.
- A rerun skips a job whose folder holds its report (its entry says ``"skipped": true``, with the earlier report)
  and refuses one finished with other settings.
- Without ``--ray`` the jobs run one after another in this process and Ray is never imported; ``--ray auto``
  connects to the running cluster, or starts a local Ray; ``--ray ADDRESS`` connects to that cluster
  (``ray://host:10001``, ``host:6379``). Where the files go: `engine.batch.run`.
- Exit codes: 0 when every job is ok, 1 when one failed (the others still ran), 2 for bad arguments or a bad job
  list (before any work), 130 on Ctrl-C (finished folders stay, unfinished jobs leave nothing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli import COMMANDS, add_options
from .jobs import SUMMARY_FILENAME, BatchError, BatchJob, entry_jobs, fit_jobs
from .run import RAY_MISSING, Batch, connect_ray, run_on_ray, run_serial

TABLE_METRICS = ("chamfer_l1", "normal_consistency", "fscore", "iou")
"""The fit metrics the table shows (summary.json has them all)."""
DESCRIPTION = "Run many fit, evolve or morph jobs, one after another or as Ray tasks"

_EXAMPLES = {
    "evolve": '"model": "fits/bunny/model.pt", "flow": "mcf", "speed": 0.001, "times": [0, 1, 2], "steps": 500',
    "morph": '"source": "a.ply", "target": "b.ply", "method": "levelset", "frames": 5, "fit-steps": 500',
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine batch", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="kind", required=True)
    fit = commands.add_parser("fit", help="one fit per mesh file, each into OUT/<mesh stem>")
    fit.add_argument("meshes", nargs="+", type=Path, help="mesh files (PLY/OBJ/STL/OFF/GLB), or folders of them")
    add_options(fit, "fit", COMMANDS["fit"].options)
    for kind, positionals in (("evolve", "model"), ("morph", "source, target")):
        text = f"the {kind} jobs of a JSON list of entries, each with {positionals} and options by long name"
        sub = commands.add_parser(kind, help=text, description=text)
        sub.add_argument(
            "jobs", type=Path, help=f'a JSON list of {kind} entries, e.g. [{{"name": "a", {_EXAMPLES[kind]}}}]'
        )
    for sub in commands.choices.values():
        sub.add_argument("-o", "--output", type=Path, required=True, help="folder of one folder per job and summary.json")
        sub.add_argument(
            "--ray",
            metavar="auto|ADDRESS",
            help="run the jobs as Ray tasks: auto connects to the running cluster or starts a local Ray; ADDRESS "
            f"connects to that cluster (ray://host:10001, host:6379). Needs Ray: {RAY_MISSING}",
        )
        sub.add_argument("--cpus-per-job", type=int, default=1, help="CPUs of each job, its torch threads (default: 1)")
        sub.add_argument(
            "--gpus-per-job", type=float, default=0.0, help="GPUs of each Ray task (0.5: two jobs share one; default: 0)"
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    ray = batch = None
    try:
        batch = _checked_batch(args)
        if args.ray is not None:
            ray = connect_ray(args.ray)
            print(ray.said, flush=True)
        args.output.mkdir(parents=True, exist_ok=True)
        skipped = len(batch.jobs) - len(batch.pending)
        if skipped:
            print(f"{skipped} of {len(batch.jobs)} jobs finished before: skipped", file=sys.stderr, flush=True)
        if ray is None:
            run_serial(batch)
        else:
            run_on_ray(batch, ray)
    except (BatchError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ncancelled: the finished jobs' folders are kept, the others left nothing", file=sys.stderr)
        if batch is not None and args.output.is_dir():
            batch.cancel_pending()
            print_table(batch.jobs, batch.entries, args.output)
        return 130
    finally:
        if ray is not None:
            ray.close()
    batch.write_summary()
    print_table(batch.jobs, batch.entries, args.output)
    return 1 if any(entry["status"] == "error" for entry in batch.entries) else 0


def _checked_batch(args: argparse.Namespace) -> Batch:
    """The batch of the arguments, every job checked (`BatchError` before any work)."""
    if args.cpus_per_job < 1:
        raise BatchError(f"--cpus-per-job must be at least 1, got {args.cpus_per_job}")
    if not args.gpus_per_job >= 0:
        raise BatchError(f"--gpus-per-job must be 0 or more, got {args.gpus_per_job:g}")
    if args.output.exists() and not args.output.is_dir():
        raise BatchError(f"-o {args.output} is a file; give a folder for the jobs' folders")
    jobs = fit_jobs(args, args.output) if args.kind == "fit" else entry_jobs(args.kind, args.jobs, args.output)
    return Batch(jobs, args.output, args.cpus_per_job, args.gpus_per_job)


def print_table(jobs: list[BatchJob], entries: list[dict], output: Path) -> None:
    """One line per job on stdout: its folder, status, seconds and main results (or its error)."""
    rows = [("job", "status", "seconds", "result")]
    for job, entry in zip(jobs, entries):
        status = "skipped" if entry.get("skipped") else entry["status"]
        seconds = f"{entry['seconds']:.1f}" if isinstance(entry.get("seconds"), (int, float)) else "-"
        rows.append((job.name, status, seconds, entry.get("error") or _results(entry.get("metrics"))))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    for row in rows:
        print(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}".rstrip())
    counts = {status: sum(entry["status"] == status for entry in entries) for status in ("ok", "error", "cancelled")}
    skipped = sum(bool(entry.get("skipped")) for entry in entries)
    said = [f"{counts['ok']} ok" + (f" ({skipped} skipped)" if skipped else ""), f"{counts['error']} failed"]
    if counts["cancelled"]:
        said.append(f"{counts['cancelled']} cancelled")
    print(f"{len(entries)} jobs: {', '.join(said)}; summary in {output / SUMMARY_FILENAME}")


def _results(report: dict | None) -> str:
    if not report:
        return ""
    if "metrics" in report:
        return ", ".join(f"{name} {report['metrics'][name]:.4g}" for name in TABLE_METRICS if name in report["metrics"])
    if "frames" in report:
        return f"{len(report['frames'])} frames, trained {report.get('train_seconds', 0):.1f} s"
    return f"loss {report['loss']:.4g}" if "loss" in report else ""
