"""`focalbench sweep`: a grid from Hydra's override grammar -> a plan -> the pending jobs, run in
the local pool (focalbench.pool) or as one SLURM job array (focalbench.sweep_slurm), then a summary.

Each job is one `focalbench train OVERRIDES sweep_id=... job_name=...`, which writes its own CSV
row; the sweep adds a row only for a job that ended without writing one (`interrupted` if it was
stopped from outside, else `failed`). Re-running the command skips ok jobs before anything is
started or submitted and resumes the others from their checkpoints; a job still running in another
process is waited for, never started twice (run lock). `hydra.launcher.*` overrides say where jobs
run, not what they compute: they stay out of the sweep id and the jobs' configs.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from focalbench.config import RunConfig, compose, search_grid
from focalbench.errors import InputError
from focalbench.pool import check_gpus, job_command, popen_job, run_pool, slot_envs
from focalbench.results.store import is_running, latest_rows, read_rows, safe_name
from focalbench.sweep_report import (  # noqa: F401  (record_crash, rows_of: part of this API)
    JobsProgress,
    plan_table,
    record_crash,
    rows_of,
    summary_table,
    varying_overrides,
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


def split_launcher_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the runs' overrides, the `hydra.launcher.*` ones)."""
    launcher = [o for o in overrides if o.lstrip("+~").startswith("hydra.launcher.")]
    runs = [o for o in overrides if o not in launcher]
    chosen = [o for o in runs if o.lstrip("+~").startswith("hydra/launcher=")]
    if chosen:
        raise InputError(
            f"{chosen[0]}: choose the launcher with --launcher (pool, submitit_slurm, ...)"
        )
    return runs, launcher


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
        cfg = resolved(compose([*job_overrides, f"sweep_id='{sweep_id}'"]))
        if cfg.run_id in seen:  # two spellings of one config: run it once
            continue
        seen.add(cfg.run_id)
        plan.jobs.append(Job(job_overrides, cfg))
    if not plan.jobs:
        raise InputError("the sweep is empty: give overrides such as loss=focal,bce")
    csv_path = Path(plan.jobs[0].cfg.results_dir) / "runs.csv"
    latest = latest_rows(read_rows(csv_path)) if csv_path.is_file() else {}
    for job in plan.jobs:
        job.previous = previous_status(latest, job.cfg)
        if job.previous == "ok" and not force:
            job.state = DONE
        elif job.previous in ("failed", "diverged") and not (retry_failed or force):
            job.state = "failed"
        job.elsewhere = job.state == PENDING and is_running(job.cfg.results_dir, job.run_id)
    return plan


def resolved(cfg: RunConfig) -> RunConfig:
    """cfg with a data-dependent loss.alpha word (inverse_freq) resolved, so that the plan knows the
    run id the job will record (engine/alpha.py; the data code is imported only then)."""
    if not isinstance(cfg.loss.alpha, str):
        return cfg
    from focalbench.engine.alpha import resolve_alpha

    return resolve_alpha(cfg)


def previous_status(latest: dict[str, dict[str, str]], cfg: RunConfig) -> str:
    """The status of a config's latest attempt, under its run id or the id an older schema gave it
    (RunConfig.run_ids): an ok row under either means done."""
    statuses = [latest[rid].get("status", "") for rid in cfg.run_ids if rid in latest]
    return "ok" if "ok" in statuses else (statuses[0] if statuses else "")


# ---- the command ---------------------------------------------------------------------------------
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
    launcher: str = "pool",
    pending_warn_min: float = 10.0,
) -> int:
    """Plan, print, run the pending jobs (local pool, or SLURM with launcher="submitit_slurm"),
    print the summary. Returns the exit code (1 if a job did not end ok)."""
    from rich.console import Console

    console = console or Console()
    if launcher not in ("pool", "submitit_slurm"):
        raise InputError(f"launcher={launcher!r}; choose from ['pool', 'submitit_slurm']")
    overrides, launcher_overrides = split_launcher_overrides(overrides)
    if launcher == "pool" and launcher_overrides:
        raise InputError(
            f"{launcher_overrides[0]} sets a cluster launcher; the local pool takes --jobs, "
            "--gpus and --jobs-per-gpu (or give --launcher submitit_slurm)"
        )
    if jobs < 1 or jobs_per_gpu < 1:
        raise InputError(f"--jobs={jobs} and --jobs-per-gpu={jobs_per_gpu} must be at least 1")
    if gpus:
        check_gpus(gpus)
    slurm = None
    if launcher != "pool":  # checked before planning: a request that can never start fails at once
        from focalbench.sweep_slurm import slurm_request

        slurm = slurm_request(launcher_overrides, console, not dry_run, pending_warn_min)
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
    failed = execute_plan(plan, jobs, gpus, jobs_per_gpu, force, console, slurm=slurm)
    if todo or n_done:
        console.print(summary_table(plan))
    return 1 if failed else 0


def execute_plan(
    plan: Plan,
    jobs: int = 1,
    gpus: Sequence[int] | None = None,
    jobs_per_gpu: int = 1,
    force: bool = False,
    console=None,
    slurm: dict[str, Any] | None = None,
) -> int:
    """Run the plan's pending jobs with live progress: in the local pool, or as a SLURM job array
    when `slurm` holds a fitted request (sweep_slurm.slurm_request). Returns how many did not end
    ok. Ctrl-C or SIGTERM stops (or cancels) the jobs, which record themselves `interrupted`."""
    from rich.console import Console

    todo = plan.to_run
    if not todo:
        return 0
    with JobsProgress(console or Console(), todo) as view:
        if slurm is not None:
            from focalbench.sweep_slurm import run_on_slurm

            statuses = run_on_slurm(plan, todo, slurm, force, view)
        else:
            statuses = _run_local(plan, todo, slot_envs(jobs, gpus, jobs_per_gpu), force, view)
    return sum(status != "ok" for status in statuses.values())


def _run_local(plan: Plan, todo: list[Job], envs, force: bool, view: JobsProgress) -> dict:
    """The pending jobs in the local pool, one fresh process each; {run_id: ok | failed}."""
    sweep_dir = Path(todo[0].cfg.results_dir) / "sweeps" / plan.sweep_id
    csv_path = Path(todo[0].cfg.results_dir) / "runs.csv"
    statuses: dict[str, str] = {}
    rows_before: dict[str, int] = {}

    def launch(job: Job, env: dict[str, str]):
        rows_before[job.run_id] = rows_of(csv_path, job.run_id)
        # quoted: Hydra would read a run id such as 681005e123 as a float
        extra = [f"sweep_id='{plan.sweep_id}'", f"job_name='{job.run_id}'", "train.progress=false"]
        if force:
            extra.append("--force")
        view.set(job.run_id, "running")
        return popen_job(
            job_command(job.overrides, extra), env, sweep_dir / "logs" / f"{job.run_id}.log"
        )

    def on_done(job: Job, code: int, env: dict[str, str]) -> None:
        # a job that wrote its row (any status) is recorded; one that ended without a row (killed
        # before or after training, a crashed interpreter, bad input) gets one here. Counting rows,
        # not reading the exit code: a job killed just after its ok row must not get a second row.
        if code != 0 and rows_of(csv_path, job.run_id) == rows_before[job.run_id]:
            record_crash(job, code, sweep_dir / "logs" / f"{job.run_id}.log")
        statuses[job.run_id] = "ok" if code == 0 else "failed"
        mark = "[green]ok[/]" if code == 0 else f"[red]exit {code}[/]"
        line = f"{mark} {job.run_id} {varying_overrides(plan, job)}"
        view.set(job.run_id, statuses[job.run_id], line=line)

    try:
        run_pool(todo, envs, launch, on_done)
    except KeyboardInterrupt:
        view.say(
            "interrupted: the running jobs were stopped and recorded `interrupted`; "
            "run the same command again to resume them"
        )
        raise
    return statuses


def run_hydra_launcher(
    overrides: Sequence[str], launcher: str, sweep_id: str | None, dry_run: bool = False
) -> int:
    """A sweep through another Hydra launcher (e.g. basic): a Hydra multirun of focalbench.train.
    It submits every job of the grid; jobs with an ok row skip themselves."""
    from focalbench.config import group_options

    choices = ["pool", *group_options("hydra/launcher"), "gpu_pool"]
    if launcher not in choices:
        raise InputError(f"--launcher={launcher!r}; choose from {sorted(set(choices))}")
    runs, _ = split_launcher_overrides(overrides)
    sid = safe_name(sweep_id, "--sweep-id") if sweep_id else default_sweep_id(runs)
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
