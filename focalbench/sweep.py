"""`focalbench sweep`: a grid from Hydra's override grammar -> a plan -> one fresh process per job
in the local pool (focalbench.pool), then a summary.

Each job is `python -m focalbench train OVERRIDES sweep_id=... job_name=...`, which writes its own
CSV row; the sweep adds a row only for a job that ended without writing one (`interrupted` if a
signal stopped it, else `failed`). Re-running the command skips ok jobs and resumes the others from
their checkpoints; a job still running in another process is waited for, never started twice (run
lock).
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from focalbench.config import RunConfig, compose, search_grid
from focalbench.errors import InputError
from focalbench.pool import check_gpus, job_command, popen_job, run_pool, slot_envs
from focalbench.results.store import (
    append_row,
    is_running,
    latest_rows,
    read_rows,
    run_dir,
    safe_name,
)

DONE = "done"
PENDING = "pending"


@dataclass
class Job:
    overrides: list[str]
    cfg: RunConfig
    # pending | done (an ok row) | failed (failed/diverged row, kept unless --retry-failed)
    state: str = PENDING
    previous: str = ""  # status of the latest attempt, if any
    # another process holds its run lock (e.g. a job of a killed sweep still finishing): the job
    # started here waits for it, then skips (ok by then) or resumes
    elsewhere: bool = False

    @property
    def run_id(self) -> str:
        return self.cfg.run_id


@dataclass
class Plan:
    sweep_id: str
    jobs: list[Job] = field(default_factory=list)

    @property
    def to_run(self) -> list[Job]:
        """Pending jobs; those running elsewhere last, so waiting for them holds no slot early."""
        return sorted((j for j in self.jobs if j.state == PENDING), key=lambda j: j.elsewhere)


def with_search_grid(overrides: Sequence[str]) -> list[str]:
    """`hparams_search=NAME` -> the grid lines of that ready-made grid, then the other overrides; an
    override given by the user replaces the grid line of the same key (as in Hydra's multirun)."""
    names = [o.partition("=")[2] for o in overrides if o.startswith("hparams_search=")]
    rest = [o for o in overrides if not o.startswith("hparams_search=")]
    if not names:
        return rest
    given = {o.lstrip("+~").partition("=")[0] for o in rest}
    grid = [line for line in search_grid(names[-1]) if line.partition("=")[0] not in given]
    return grid + rest


def expand_grid(overrides: Sequence[str]) -> list[list[str]]:
    """Hydra's multirun grammar -> the per-job override lists (`a=1,2 b=range(0,3)` -> 6 jobs), with
    `hparams_search=NAME` expanded to its grid."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(with_search_grid(overrides))
    except HydraException as exc:
        raise InputError(f"cannot parse overrides: {str(exc).splitlines()[0]}") from exc
    (batch,) = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return batch


def default_sweep_id(overrides: Sequence[str]) -> str:
    """Same command -> same sweep id -> same folder, so re-running a sweep resumes it."""
    return "sweep-" + hashlib.sha1(" ".join(sorted(overrides)).encode()).hexdigest()[:8]


def make_plan(
    overrides: Sequence[str],
    sweep_id: str | None = None,
    force: bool = False,
    retry_failed: bool = False,
) -> Plan:
    sweep_id = safe_name(sweep_id, "--sweep-id") if sweep_id else default_sweep_id(overrides)
    plan = Plan(sweep_id)
    seen: set[str] = set()
    for job_overrides in expand_grid(overrides):
        cfg = compose([*job_overrides, f"sweep_id='{sweep_id}'"])
        if cfg.run_id in seen:  # two spellings of one config: run it once
            continue
        seen.add(cfg.run_id)
        plan.jobs.append(Job(job_overrides, cfg))
    if not plan.jobs:
        raise InputError("the sweep is empty: give overrides such as loss=focal,bce")
    csv_path = Path(plan.jobs[0].cfg.results_dir) / "runs.csv"
    latest = latest_rows(read_rows(csv_path)) if csv_path.is_file() else {}
    for job in plan.jobs:
        job.previous = latest.get(job.run_id, {}).get("status", "")
        if job.previous == "ok" and not force:
            job.state = DONE
        elif job.previous in ("failed", "diverged") and not (retry_failed or force):
            job.state = "failed"
        job.elsewhere = job.state == PENDING and is_running(job.cfg.results_dir, job.run_id)
    return plan


# exit statuses of a job stopped from outside (a kill, the OOM killer, a sweep stopping it): the
# next run resumes it; any other ending without a row (a crashed interpreter, bad input) fails
_STOP_SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_INTERRUPTED_EXITS = {-int(s) for s in _STOP_SIGNALS} | {128 + int(s) for s in _STOP_SIGNALS}


def record_crash(job: Job, code: int, log_path: Path) -> None:
    """A job that ended without writing its row still gets one: `interrupted` if it was stopped
    (resumed by the next run), else `failed` with the last line of its log."""
    tail = ""
    if log_path.is_file():
        lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
        tail = lines[-1][:300] if lines else ""
    reason = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
    cfg = job.cfg
    append_row(
        Path(cfg.results_dir) / "runs.csv",
        {
            "run_id": job.run_id,
            "sweep_id": cfg.sweep_id,
            "status": "interrupted" if code in _INTERRUPTED_EXITS else "failed",
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


# ---- the command ---------------------------------------------------------------------------------
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
    """The overrides of a job that not every job of the sweep shares (what tells the jobs apart)."""
    common = set.intersection(*(set(j.overrides) for j in plan.jobs))
    return " ".join(o for o in job.overrides if o not in common) or " ".join(job.overrides)


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


def run_sweep(
    overrides: Sequence[str],
    jobs: int = 1,
    gpus: Sequence[int] | None = None,
    jobs_per_gpu: int = 1,
    sweep_id: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    retry_failed: bool = False,
    console=None,
) -> int:
    """Plan, print, run the pending jobs in the pool, print the summary. Returns the exit code (1 if
    a job failed)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console()
    if jobs < 1 or jobs_per_gpu < 1:
        raise InputError(f"--jobs={jobs} and --jobs-per-gpu={jobs_per_gpu} must be at least 1")
    if gpus:
        check_gpus(gpus)
    plan = make_plan(overrides, sweep_id, force=force, retry_failed=retry_failed)
    todo = plan.to_run
    n_done = sum(j.state == DONE for j in plan.jobs)
    n_failed = sum(j.state == "failed" for j in plan.jobs)
    n_elsewhere = sum(j.elsewhere for j in todo)
    console.print(
        f"[bold]sweep {plan.sweep_id}[/]: {len(plan.jobs)} jobs, {n_done} already done, "
        f"{n_failed} failed before (kept; --retry-failed re-runs them), {len(todo)} to run"
        + (f" ({n_elsewhere} running in another process: waited for)" if n_elsewhere else "")
    )
    if dry_run:
        console.print(plan_table(plan))
        return 0
    envs = slot_envs(jobs, gpus, jobs_per_gpu)
    sweep_dir = Path(plan.jobs[0].cfg.results_dir) / "sweeps" / plan.sweep_id
    csv_path = Path(plan.jobs[0].cfg.results_dir) / "runs.csv"
    codes: dict[str, int] = {}
    rows_before: dict[str, int] = {}

    def launch(job: Job, env: dict[str, str]):
        rows_before[job.run_id] = rows_of(csv_path, job.run_id)
        # quoted: Hydra would read a run id such as 681005e123 as a float
        extra = [f"sweep_id='{plan.sweep_id}'", f"job_name='{job.run_id}'", "train.progress=false"]
        if force:
            extra.append("--force")
        return popen_job(
            job_command(job.overrides, extra), env, sweep_dir / "logs" / f"{job.run_id}.log"
        )

    progress = Progress(
        TextColumn("[bold]jobs"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )

    def on_done(job: Job, code: int, env: dict[str, str]) -> None:
        codes[job.run_id] = code
        # a job that wrote its row (any status) is recorded; one that ended without a row (killed
        # before or after training, a crashed interpreter, bad input) gets one here. Counting rows,
        # not reading the exit code: a job killed just after its ok row must not get a second row.
        if code != 0 and rows_of(csv_path, job.run_id) == rows_before[job.run_id]:
            record_crash(job, code, sweep_dir / "logs" / f"{job.run_id}.log")
        mark = "[green]ok[/]" if code == 0 else f"[red]exit {code}[/]"
        progress.console.print(f"{mark} {job.run_id} {' '.join(job.overrides)}")
        progress.advance(task)

    try:
        with progress:
            task = progress.add_task("jobs", total=len(todo))
            run_pool(todo, envs, launch, on_done)
    except KeyboardInterrupt:
        console.print(
            "interrupted: the running jobs were stopped and recorded `interrupted`; "
            "run the same command again to resume them"
        )
        raise
    if todo or n_done:
        console.print(summary_table(plan))
    failed = [rid for rid, code in codes.items() if code != 0]
    return 1 if failed else 0


def run_hydra_launcher(
    overrides: Sequence[str], launcher: str, sweep_id: str | None, dry_run: bool = False
) -> int:
    """A sweep through a Hydra launcher (e.g. submitit_slurm): a Hydra multirun of
    focalbench.train."""
    from focalbench.config import group_options

    choices = ["pool", *group_options("hydra/launcher"), "gpu_pool"]
    if launcher not in choices:
        raise InputError(f"--launcher={launcher!r}; choose from {sorted(set(choices))}")
    sid = safe_name(sweep_id, "--sweep-id") if sweep_id else default_sweep_id(overrides)
    cmd = [
        sys.executable,
        "-m",
        "focalbench.train",
        "-m",
        *overrides,
        f"hydra/launcher={launcher}",
        f"sweep_id='{sid}'",
        "train.progress=false",
    ]
    if dry_run:
        print(" ".join(cmd))
        return 0
    return subprocess.call(cmd)
