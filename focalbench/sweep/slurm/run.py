"""The SLURM runner of `focalbench sweep --launcher submitit_slurm`: the plan's pending jobs as one
SLURM job array, followed to their ends (request.py checks the request first; jobs.py watches).

Why submitit's Python API and not a Hydra multirun through hydra-submitit-launcher: the sweep then
plans first and submits only the runs that are not done (a re-run of a finished sweep submits
nothing), follows the jobs with the same live view as the local pool, and ends with the same
summary and exit code. hydra-submitit-launcher submits the whole grid and waits on sacct, which
clusters without accounting do not answer. Both read conf/hydra/launcher/submitit_slurm.yaml.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from focalbench.errors import InputError
from focalbench.results.store import latest_rows, read_rows
from focalbench.sweep.plan import Job, Plan
from focalbench.sweep.report import JobsProgress, record_end, rows_of, varying_overrides
from focalbench.sweep.slurm import jobs, request


def run_on_slurm(
    plan: Plan, todo: list[Job], params: dict[str, Any], force: bool, view: JobsProgress
) -> dict[str, str]:
    """Submit the jobs as one array, follow them to their ends; returns {run_id: status}.

    A job that ends without writing its row gets one: `interrupted` when SLURM stopped it
    (cancelled, timed out, node failure, preempted), else `failed` with the last line of its log.
    Ctrl-C or SIGTERM cancels the jobs (they record themselves `interrupted`) and re-raises.
    """
    from focalbench.utils import sigterm_as_interrupt

    results = Path(todo[0].cfg.results_dir)
    csv_path = results / "runs.csv"
    folder = results / "sweeps" / plan.sweep_id / ".submitit"
    rows_before = {job.run_id: rows_of(csv_path, job.run_id) for job in todo}
    subs = submit(plan, todo, params, force, folder)
    by_id = {sub.job_id: (job, sub) for job, sub in zip(todo, subs)}
    view.say(
        f"submitted {len(subs)} job(s) as SLURM job {subs[0].job_id.split('_')[0]}; "
        f"logs in {folder}"
    )
    statuses: dict[str, str] = {}

    def on_change(jid: str, state: str, reason: str) -> None:
        job, sub = by_id[jid]
        label = f"{job.run_id} {varying_overrides(plan, job)} (job {jid})"
        if state == "PENDING":
            view.set(job.run_id, "pending", reason, f"pending {label}, {reason}" if reason else "")
        elif state in jobs.ACTIVE:
            view.set(job.run_id, "running", line=f"running {label}" if state == "RUNNING" else "")
        else:
            status = settle(job, jid, state, rows_before[job.run_id], Path(sub.paths.stdout))
            statuses[job.run_id] = status
            mark = "[green]ok[/]" if status == "ok" else f"[red]{status}[/]"
            detail = "" if state == "COMPLETED" else f" — SLURM {state}"
            if status not in ("ok", "interrupted"):
                detail += f"; log {sub.paths.stdout}"
            view.set(job.run_id, status, line=f"{mark} {label}{detail}")

    def warn(text: str) -> None:
        view.say(f"[yellow]warning:[/] {text}")

    pending_s = params.get("pending_warn_min", jobs.PENDING_WARN_MIN) * 60
    try:
        with sigterm_as_interrupt():
            jobs.watch(list(by_id), on_change, warn, pending_s)
    except KeyboardInterrupt:
        live = [jid for jid, (job, _) in by_id.items() if job.run_id not in statuses]
        view.say(
            f"interrupted: cancelling SLURM jobs {' '.join(live)}; running ones record "
            "themselves `interrupted`; run the same command again to resume them"
        )
        jobs.cancel(live)
        jobs.watch(live, on_change, warn, pending_s)
        raise
    return statuses


def settle(job: Job, jid: str, state: str, rows_before: int, log_path: Path) -> str:
    """A SLURM job's end -> its run's status: the row the job wrote, else one written here."""
    csv_path = Path(job.cfg.results_dir) / "runs.csv"
    latest = latest_rows(read_rows(csv_path)).get(job.run_id, {}) if csv_path.is_file() else {}
    if rows_of(csv_path, job.run_id) > rows_before or latest.get("status") == "ok":
        return latest.get("status", "")
    status = "interrupted" if state in jobs.STOPPED_ENDS else "failed"
    record_end(job, status, f"SLURM job {jid} ended {state}", log_path)
    return status


def submit(plan: Plan, todo: list[Job], params: dict[str, Any], force: bool, folder: Path) -> list:
    """The pending jobs as one SLURM job array of jobs.run_in_job; submitit's Job objects, in the
    order of `todo`. A refusal by sbatch (an account, a QOS, a constraint) is bad input."""
    from submitit.core.utils import FailedJobError

    common = [f"sweep_id='{plan.sweep_id}'", "train.progress=false"]
    # a job's hparams_search=NAME is dropped: the plan has expanded that grid already
    args = [
        [o for o in job.overrides if not o.startswith("hparams_search=")]
        + [*common, f"job_name='{job.run_id}'"]
        for job in todo
    ]
    executor = request.make_executor(folder / "%j", params)
    # submitit echoes sbatch's stderr when sbatch fails: the error below says it in one line
    with jobs.quiet_submitit(), contextlib.redirect_stderr(io.StringIO()):
        try:
            return executor.map_array(jobs.run_in_job, args, [force] * len(todo))
        except (FailedJobError, OSError) as exc:
            lines = [ln for ln in str(exc).splitlines() if "error" in ln.lower()] or [str(exc)]
            raise InputError(f"sbatch refused the jobs: {lines[0].strip()[:300]}") from exc
