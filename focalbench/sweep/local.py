"""The local runner: the job pool behind `focalbench sweep` and `hydra/launcher=gpu_pool`, one fresh
process per job, at most N alive; run_local runs a Plan's pending jobs in it.

On the CPU the slots split the cores' threads between side-by-side jobs; on GPUs each slot has its
own CUDA_VISIBLE_DEVICES (K slots per GPU). A fresh process per job is what makes GPU placement
work: launchers that reuse workers see GPU 0 everywhere. Ctrl-C or SIGTERM stops the running jobs
with SIGTERM, and on Linux the kernel sends them SIGTERM when the pool's process dies, even by
SIGKILL, so every job records itself `interrupted` instead of running on unseen.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from focalbench.errors import InputError
from focalbench.results.store import status_of
from focalbench.sweep.plan import Job, Plan
from focalbench.sweep.report import JobsProgress, record_crash, rows_of, varying_overrides
from focalbench.utils import sigterm_as_interrupt


def slot_envs(
    jobs: int = 1,
    gpus: Sequence[int] | None = None,
    jobs_per_gpu: int = 1,
    cpu_count: int | None = None,
) -> list[dict[str, str]]:
    """Environment of each pool slot. GPUs: K slots per GPU, each with CUDA_VISIBLE_DEVICES set to
    its GPU. CPU: `jobs` slots with torch/OpenMP threads split evenly so the jobs don't fight over
    the cores."""
    if gpus:
        return [{"CUDA_VISIBLE_DEVICES": str(g)} for g in gpus for _ in range(jobs_per_gpu)]
    threads = max(1, (cpu_count or os.cpu_count() or 1) // jobs)
    # passive OpenMP waits: side-by-side jobs on few cores otherwise burn each other's time spinning
    env = {
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": str(threads),
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    return [dict(env) for _ in range(jobs)]


def check_gpus(gpus: Sequence[int], device_count: int | None = None) -> None:
    """`--gpus` names GPUs this machine has, or it is a one-line error."""
    if device_count is None:
        import torch

        device_count = torch.cuda.device_count()
    if device_count == 0:
        raise InputError(
            f"--gpus {','.join(map(str, gpus))}: no CUDA GPU on this machine; drop --gpus "
            "to run on the CPU (--jobs N)"
        )
    bad = [g for g in gpus if not 0 <= g < device_count]
    if bad:
        raise InputError(
            f"--gpus: GPU {bad[0]} does not exist; choose from {list(range(device_count))}"
        )


def run_pool(
    items: Sequence,
    envs: Sequence[dict[str, str]],
    launch: Callable,
    on_done: Callable,
    poll_s: float = 0.2,
) -> None:
    """Run `launch(item, env) -> Popen-like` with at most len(envs) alive; the next starts when a
    slot frees.

    on_done(item, returncode, env) is called as each finishes. On Ctrl-C or SIGTERM the running
    processes get SIGTERM (they record themselves `interrupted`) and are waited for, on_done is
    called for each of them, and KeyboardInterrupt propagates.
    """
    pending = deque(items)
    free = deque(range(len(envs)))
    running: dict[int, tuple] = {}
    with sigterm_as_interrupt():  # `kill SWEEP_PID` stops the jobs as Ctrl-C does
        try:
            while pending or running:
                while pending and free:
                    slot = free.popleft()
                    item = pending.popleft()
                    running[slot] = (item, launch(item, envs[slot]))
                for slot, (item, proc) in list(running.items()):
                    code = proc.poll()
                    if code is not None:
                        del running[slot]
                        free.append(slot)
                        on_done(item, code, envs[slot])
                time.sleep(poll_s)
        except KeyboardInterrupt:
            _stop([proc for _, proc in running.values()])
            for slot, (item, proc) in running.items():
                on_done(item, proc.poll(), envs[slot])
            raise


def _stop(procs: list, grace_s: float = 60.0) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def job_command(overrides: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """`python -m focalbench train` for one job. A job's `hparams_search=NAME` is dropped: the
    sweeper that made the job list has expanded that grid already."""
    overrides = [o for o in overrides if not o.startswith("hparams_search=")]
    return [sys.executable, "-m", "focalbench", "train", *overrides, *extra]


def popen_job(cmd: list[str], env_extra: dict[str, str], log_path: Path) -> subprocess.Popen:
    env = {**os.environ, **env_extra, "FOCALBENCH_SPAWN_T": repr(time.time())}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        # its own session: a terminal Ctrl-C reaches the sweep only, which stops the jobs in order
        return subprocess.Popen(
            cmd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_stopped_with_parent(),
        )


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _stopped_with_parent() -> Callable[[], None] | None:
    """preexec_fn: the kernel sends the job SIGTERM when the sweep process dies, even by SIGKILL, so
    the job records itself `interrupted` instead of running on unseen (Linux; elsewhere a job
    outlives a killed sweep, and its run lock keeps a re-run from starting it a second time)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent, sigterm = os.getpid(), int(signal.SIGTERM)

    def preexec() -> None:  # runs in the child between fork and exec: keep it to system calls
        prctl(_PR_SET_PDEATHSIG, sigterm)
        if os.getppid() != parent:  # the sweep died before prctl took effect
            os.kill(os.getpid(), sigterm)

    return preexec


def run_local(plan: Plan, todo: list[Job], envs, force: bool, view: JobsProgress) -> dict:
    """The pending jobs in the local pool, one fresh process each; {run_id: ok | pruned | failed}
    (a run a search's pruner stopped exits 0 with a `pruned` row)."""
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
        if code == 0 and status_of(csv_path).get(job.run_id) == "pruned":
            statuses[job.run_id] = "pruned"
        mark = "[green]ok[/]" if code == 0 else f"[red]exit {code}[/]"
        mark = "[yellow]pruned[/]" if statuses[job.run_id] == "pruned" else mark
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
