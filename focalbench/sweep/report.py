"""What a sweep tells about its jobs, the same for the local pool and SLURM: the plan table, the
live progress while they run, a row for a job that ended without writing one, and the summary.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

from focalbench.results.store import append_row, latest_rows, read_rows, run_dir
from focalbench.sweep.plan import Job, Plan

# exit statuses of a job stopped from outside (a kill, the OOM killer, a sweep stopping it): the
# next run resumes it; any other ending without a row (a crashed interpreter, bad input) fails
_STOP_SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_INTERRUPTED_EXITS = {-int(s) for s in _STOP_SIGNALS} | {128 + int(s) for s in _STOP_SIGNALS}
_LIVE = ("pending", "running")


def record_crash(job: Job, code: int, log_path: Path) -> None:
    """A local job that ended without writing its row still gets one: `interrupted` if it was
    stopped (resumed by the next run), else `failed` with the last line of its log."""
    reason = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
    record_end(job, "interrupted" if code in _INTERRUPTED_EXITS else "failed", reason, log_path)


def record_end(job: Job, status: str, reason: str, log_path: Path) -> None:
    """The row of a job that ended without writing one: `status` and `reason: last log line`."""
    tail = ""
    if log_path.is_file():
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
        tail = lines[-1][:300] if lines else ""
    cfg = job.cfg
    append_row(
        Path(cfg.results_dir) / "runs.csv",
        {
            "run_id": job.run_id,
            "sweep_id": cfg.sweep_id,
            "status": status,
            "model": cfg.model.name,
            "loss": cfg.loss.name,
            "seed": cfg.seed,
            "dataset": cfg.data.name,
            "run_dir": str(run_dir(cfg.results_dir, job.run_id, cfg.sweep_id, job.run_id)),
            "error": f"{reason}: {tail}" if tail else reason,
        },
    )


def rows_of(csv_path: Path, run_id: str) -> int:
    """How many rows runs.csv holds for run_id (0 without a runs.csv)."""
    return sum(r["run_id"] == run_id for r in read_rows(csv_path)) if csv_path.is_file() else 0


class JobsProgress:
    """The live view of the running jobs: a bar with the count of pending (with SLURM's reasons),
    running, done and failed jobs, and one printed line per event, which a log file keeps too (a
    console that is no terminal shows the lines only)."""

    def __init__(self, console, jobs: list[Job]) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.states = {job.run_id: "pending" for job in jobs}
        self.reasons: dict[str, str] = {}
        self.progress = Progress(
            TextColumn("[bold]jobs"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = self.progress.add_task("jobs", total=len(jobs), counts=self.counts())

    def __enter__(self) -> JobsProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def say(self, text: str) -> None:
        self.progress.console.print(text)

    def set(self, run_id: str, state: str, reason: str = "", line: str = "") -> None:
        """state: pending | running | ok | pruned | failed | diverged | interrupted; prints `line`
        if any."""
        if state not in _LIVE and self.states[run_id] in _LIVE:
            self.progress.advance(self.task)
        self.states[run_id], self.reasons[run_id] = state, reason
        self.progress.update(self.task, counts=self.counts())
        if line:
            self.say(line)

    def counts(self) -> str:
        n = Counter(self.states.values())
        reasons = sorted(
            {self.reasons.get(r, "") for r, s in self.states.items() if s == "pending"}
        )
        why = ", ".join(r for r in reasons if r)
        text = f"{n['pending']} pending" + (f" ({why})" if why else "")
        text += f" · {n['running']} running · {n['ok']} done"
        text += f" · {n['pruned']} pruned" if n["pruned"] else ""
        text += f" · {sum(v for k, v in n.items() if k not in (*_LIVE, 'ok', 'pruned'))} failed"
        return text


def plan_table(plan: Plan):
    from rich.table import Table

    table = Table(title=f"sweep {plan.sweep_id}", title_justify="left")
    for col in ("#", "run id", "overrides", "state"):
        table.add_column(col)
    for i, job in enumerate(plan.jobs):
        state = job.state if job.state != "failed" else f"{job.previous} (--retry-failed re-runs)"
        if job.elsewhere:
            state += " (running in another process: waited for)"
        table.add_row(str(i), job.run_id, " ".join(job.overrides), state)
    return table


def varying_overrides(plan: Plan, job: Job) -> str:
    """The overrides of a job that not every job of the sweep shares (what tells the jobs apart),
    leaving out a search's `prune.*` bookkeeping (the study, its storage, the trial's id)."""
    common = set.intersection(*(set(j.overrides) for j in plan.jobs))
    shown = [o for o in job.overrides if not o.startswith("prune.")]
    return " ".join(o for o in shown if o not in common) or " ".join(shown)


def summary_table(plan: Plan):
    from rich.table import Table

    latest = latest_rows(read_rows(Path(plan.jobs[0].cfg.results_dir) / "runs.csv"))
    table = Table(title=f"sweep {plan.sweep_id}: results", title_justify="left")
    for col in ("run id", "job", "status", "mAP", "AP50", "laece0", "wall s", "error"):
        table.add_column(
            col, justify="right" if col in ("mAP", "AP50", "laece0", "wall s") else "left"
        )
    for job in plan.jobs:
        row = latest.get(job.run_id, {})
        table.add_row(
            job.run_id,
            varying_overrides(plan, job),
            row.get("status", "not run"),
            *(_short(row.get(k, "")) for k in ("mAP", "AP50", "laece0")),
            row.get("wall_s", ""),
            (row.get("error") or "")[:60],
        )
    return table


def _short(cell: str) -> str:
    try:
        return f"{float(cell):.4f}"
    except ValueError:
        return cell
