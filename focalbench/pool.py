"""The local job pool behind `focalbench sweep` and `hydra/launcher=gpu_pool`: one fresh process per
job, at most N alive.

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
