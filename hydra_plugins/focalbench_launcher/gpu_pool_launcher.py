"""`hydra/launcher=gpu_pool`: Hydra multirun through focalbench's pool (focalbench.sweep.local).

One fresh process per job (`python -m focalbench train OVERRIDES`), `jobs_per_gpu` jobs per GPU with
CUDA_VISIBLE_DEVICES set, or `jobs` CPU jobs side by side; the next job starts when a slot frees.
Hydra's joblib and submitit_local launchers reuse worker processes, so every job would see GPU 0.

    python -m focalbench.train -m loss=focal,bce hydra/launcher=gpu_pool hydra.launcher.gpus=[0,1]
"""

# no `from __future__ import annotations`: Hydra scans this module in a way that breaks string
# annotations of dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher


@dataclass
class GpuPoolLauncherConf:
    _target_: str = "hydra_plugins.focalbench_launcher.gpu_pool_launcher.GpuPoolLauncher"
    gpus: list[int] = field(default_factory=list)  # empty: run on the CPU, `jobs` at a time
    jobs_per_gpu: int = 1
    jobs: int = 1
    log_dir: str = "${hydra.sweep.dir}/logs"


ConfigStore.instance().store(
    group="hydra/launcher", name="gpu_pool", node=GpuPoolLauncherConf, provider="focalbench"
)


class GpuPoolLauncher(Launcher):
    def __init__(
        self, gpus: Sequence[int] = (), jobs_per_gpu: int = 1, jobs: int = 1, log_dir: str = "logs"
    ) -> None:
        self.gpus, self.jobs_per_gpu, self.jobs, self.log_dir = (
            list(gpus),
            jobs_per_gpu,
            jobs,
            log_dir,
        )
        self.config = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config = config

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from focalbench.sweep.local import check_gpus, job_command, popen_job, run_pool, slot_envs

        if self.gpus:
            check_gpus(self.gpus)
        envs = slot_envs(self.jobs, self.gpus, self.jobs_per_gpu)
        items = list(enumerate(job_overrides, start=initial_job_idx))
        codes: dict[int, int] = {}

        def launch(item, env):
            idx, overrides = item
            cmd = job_command(list(overrides), ["train.progress=false"])
            return popen_job(cmd, env, Path(self.log_dir) / f"job{idx}.log")

        def on_done(item, code, env):
            codes[item[0]] = code
            print(f"[gpu_pool] job {item[0]} {' '.join(item[1])}: exit {code}", flush=True)

        run_pool(items, envs, launch, on_done)
        return [
            _job_return(list(overrides), codes[idx], Path(self.log_dir) / f"job{idx}.log")
            for idx, overrides in items
        ]


def _job_return(overrides: list[str], code: int, log_path: Path) -> JobReturn:
    """COMPLETED for exit code 0; else FAILED with an error naming the exit code, the last line of
    the job's log and the log's path. Hydra's sweeper raises the first FAILED job's error once the
    whole batch has run, so the multirun exits non-zero."""
    ret = JobReturn(overrides=overrides, task_name="focalbench", status=JobStatus.COMPLETED)
    if code == 0:
        ret.return_value = 0
        return ret
    lines = log_path.read_text(errors="replace").splitlines() if log_path.is_file() else []
    tail = next((ln.strip() for ln in reversed(lines) if ln.strip()), "")
    how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
    tail = f": {tail}" if tail else ""
    ret.status = JobStatus.FAILED
    ret.return_value = RuntimeError(f"job {' '.join(overrides)}: {how}{tail} (log: {log_path})")
    return ret
