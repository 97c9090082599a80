"""`hydra/launcher=submitit_slurm` for Hydra's own multirun
(`python -m focalbench.train -m loss=focal,bce hydra/launcher=submitit_slurm`):
hydra-submitit-launcher's SlurmLauncher with focalbench's checks.

- Before submitting, the request is fitted to the partition (`gpus_per_node: null`), and one that
  can never start exits 2 with one line naming the field and the limit
  (focalbench.sweep.slurm.request).
- While the jobs run, their states come from squeue, not sacct: on a cluster without accounting
  the stock launcher waits forever for a cancelled job; here it becomes a FAILED job.

`focalbench sweep --launcher submitit_slurm` does not come through here: it submits only the runs
that are not done yet (focalbench/sweep/slurm/). Both read the same yaml.
"""

# no `from __future__ import annotations`: Hydra scans this module in a way that breaks string
# annotations of dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
except ImportError:  # the `slurm` extra is not installed: no launcher (and no plugin-scan warning)
    SlurmLauncher = None


def _job_return(job, overrides: list[str], state: str) -> JobReturn:
    """The job's own JobReturn from its result file; FAILED with the reason when it has none."""
    from submitit.core.utils import pickle_load

    path = Path(job.paths.result_pickle)
    if path.exists():
        outcome, value = pickle_load(path)
        if outcome == "success":
            return value
        last = [ln for ln in str(value).splitlines() if ln.strip()][-1:] or ["(no trace)"]
        error = RuntimeError(f"SLURM job {job.job_id} failed: {last[0]} (log: {job.paths.stdout})")
    else:
        error = RuntimeError(
            f"SLURM job {job.job_id} ended {state} without a result (log: {job.paths.stdout})"
        )
    ret = JobReturn(overrides=overrides, task_name="focalbench", status=JobStatus.FAILED)
    ret.return_value = error
    return ret


def _say(text: str) -> None:
    print(f"[submitit_slurm] {text}", flush=True)


def _warn(text: str) -> None:
    _say(f"warning: {text}")


if SlurmLauncher is not None:

    class FocalbenchSlurmLauncher(SlurmLauncher):
        def launch(
            self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
        ) -> Sequence[JobReturn]:
            from hydra.core.singleton import Singleton

            from focalbench.errors import InputError
            from focalbench.sweep.slurm import jobs as slurm_jobs
            from focalbench.sweep.slurm import request as slurm

            try:
                params, part = slurm.fit_request(self.params, slurm.read_partitions())
            except InputError as exc:
                print(f"error: {exc}", file=sys.stderr)
                sys.exit(2)
            executor = slurm.make_executor(params["submitit_folder"], params)
            Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
            calls = [
                (
                    list(overrides),
                    "hydra.sweep.dir",
                    idx,
                    f"job_id_for_{idx}",
                    Singleton.get_state(),
                )
                for idx, overrides in enumerate(job_overrides, start=initial_job_idx)
            ]
            with slurm_jobs.quiet_submitit():
                jobs = executor.map_array(self, *zip(*calls))
            _say(f"{part.describe()}; {slurm.describe_request(params)}; {len(jobs)} job(s)")

            def on_change(jid: str, state: str, reason: str) -> None:
                _say(f"job {jid}: {state}" + (f" ({reason})" if reason else ""))

            ids = [j.job_id for j in jobs]
            ends = slurm_jobs.watch(ids, on_change, _warn, slurm_jobs.PENDING_WARN_MIN * 60)
            return [
                _job_return(job, list(overrides), ends[job.job_id])
                for job, overrides in zip(jobs, job_overrides)
            ]
