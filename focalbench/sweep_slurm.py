"""`focalbench sweep --launcher submitit_slurm`: the plan's pending jobs as one SLURM job array.

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
from typing import TYPE_CHECKING, Any

from focalbench import slurm, slurm_jobs
from focalbench.errors import InputError
from focalbench.results.store import latest_rows, read_rows
from focalbench.sweep_report import JobsProgress, record_end, rows_of, varying_overrides

if TYPE_CHECKING:
    from focalbench.sweep import Job, Plan


def slurm_request(
    launcher_overrides: list[str],
    console,
    checked: bool = True,
    pending_warn_min: float = slurm_jobs.PENDING_WARN_MIN,
) -> dict[str, Any]:
    """The launcher yaml with the `hydra.launcher.*` overrides, fitted to the partition sinfo
    describes; InputError (exit 2) for a request that can never start. checked=False (a dry run)
    prints the request unchecked where there is no cluster to ask."""
    if not pending_warn_min > 0:
        raise InputError(f"--pending-warn-min={pending_warn_min}: must be more than 0 minutes")
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise InputError(
            "--launcher submitit_slurm needs submitit: pip install 'focalbench[slurm]'"
        ) from None
    params = slurm.launcher_params(launcher_overrides)
    params["pending_warn_min"] = pending_warn_min
    try:
        partitions = slurm.read_partitions()
    except InputError as exc:
        if checked:
            raise
        console.print(f"SLURM request not checked ({exc}): {slurm.describe_request(params)}")
        return params
    params, part = slurm.fit_request(params, partitions)
    console.print(f"SLURM {part.describe()}; {slurm.describe_request(params)}")
    return params


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
    common = [f"sweep_id='{plan.sweep_id}'", "train.progress=false"]
    # a job's hparams_search=NAME is dropped: the plan has expanded that grid already
    args = [
        [o for o in job.overrides if not o.startswith("hparams_search=")]
        + [*common, f"job_name='{job.run_id}'"]
        for job in todo
    ]
    rows_before = {job.run_id: rows_of(csv_path, job.run_id) for job in todo}
    from submitit.core.utils import FailedJobError

    executor = slurm.make_executor(folder / "%j", params)
    # submitit echoes sbatch's stderr when sbatch fails: the error below says it in one line
    with slurm_jobs.quiet_submitit(), contextlib.redirect_stderr(io.StringIO()):
        try:
            subs = executor.map_array(slurm_jobs.run_in_job, args, [force] * len(todo))
        except (FailedJobError, OSError) as exc:  # an account, a QOS, a constraint: bad input
            lines = [ln for ln in str(exc).splitlines() if "error" in ln.lower()] or [str(exc)]
            raise InputError(f"sbatch refused the jobs: {lines[0].strip()[:300]}") from exc
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
        elif state in slurm_jobs.ACTIVE:
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

    pending_s = params.get("pending_warn_min", slurm_jobs.PENDING_WARN_MIN) * 60
    try:
        with sigterm_as_interrupt():
            slurm_jobs.watch(list(by_id), on_change, warn, pending_s)
    except KeyboardInterrupt:
        live = [jid for jid, (job, _) in by_id.items() if job.run_id not in statuses]
        view.say(
            f"interrupted: cancelling SLURM jobs {' '.join(live)}; running ones record "
            "themselves `interrupted`; run the same command again to resume them"
        )
        slurm_jobs.cancel(live)
        slurm_jobs.watch(live, on_change, warn, pending_s)
        raise
    return statuses


def settle(job: Job, jid: str, state: str, rows_before: int, log_path: Path) -> str:
    """A SLURM job's end -> its run's status: the row the job wrote, else one written here."""
    csv_path = Path(job.cfg.results_dir) / "runs.csv"
    latest = latest_rows(read_rows(csv_path)).get(job.run_id, {}) if csv_path.is_file() else {}
    if rows_of(csv_path, job.run_id) > rows_before or latest.get("status") == "ok":
        return latest.get("status", "")
    status = "interrupted" if state in slurm_jobs.STOPPED_ENDS else "failed"
    record_end(job, status, f"SLURM job {jid} ended {state}", log_path)
    return status
