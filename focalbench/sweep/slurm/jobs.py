"""SLURM jobs once submitted: their states from squeue, a watch loop that reports each change, and
the body that runs inside each job (run_in_job).

No accounting is assumed: many clusters (and scripts/slurm_local.sh's) have no sacct, and
submitit's own watcher polls sacct, so it waits forever for a job that was cancelled. squeue lists
a job while it is queued or running and for MinJobAge (5 min by default) after it ends; a job that
left squeue before we saw its end is GONE, and its CSV row (if any) says how it ended.
Imports only the standard library at module level: submitit pickles run_in_job by reference, and a
job should set its thread count before torch loads.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

# a job in one of these states may still start, run or end; every other state is an end
ACTIVE = frozenset(
    "SUBMITTED PENDING CONFIGURING RUNNING COMPLETING SUSPENDED REQUEUED REQUEUE_HOLD REQUEUE_FED "
    "RESIZING SIGNALING STAGE_OUT STOPPED RESV_DEL_HOLD".split()
)
# ends that stopped the job from outside: its run resumes from its checkpoint next time. GONE: it
# left squeue before we saw how it ended (resuming is the safe guess).
STOPPED_ENDS = frozenset("CANCELLED TIMEOUT NODE_FAIL PREEMPTED DEADLINE BOOT_FAIL GONE".split())
PENDING_WARN_MIN = 10.0  # warn about a job pending longer (`focalbench sweep --pending-warn-min`)


def squeue_states(job_ids: Sequence[str]) -> dict[str, tuple[str, str]] | None:
    """{job id: (state, pending reason)} of the jobs squeue still lists (array tasks one by one,
    ended jobs included); None when squeue itself fails (the controller does not answer)."""
    masters = sorted({j.split("_")[0] for j in job_ids})
    cmd = ["squeue", "-h", "-r", "--states=all", "-o", "%i|%T|%r", "-j", ",".join(masters)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        # every id is unknown: they all ended more than MinJobAge ago
        return {} if "Invalid job id" in out.stderr else None
    states = {}
    for line in out.stdout.splitlines():
        jid, state, reason = (line.split("|") + ["", ""])[:3]
        states[jid.strip()] = (state.strip(), "" if reason.strip() == "None" else reason.strip())
    return states


@dataclass
class _Watched:
    since: float
    state: str = "SUBMITTED"
    reason: str = ""
    unseen: int = 0  # polls in a row that did not list the job
    warned: bool = False


def watch(
    job_ids: Sequence[str],
    on_change: Callable[[str, str, str], None],
    on_warning: Callable[[str], None],
    pending_warn_s: float = PENDING_WARN_MIN * 60,
    poll: Callable[[Sequence[str]], dict[str, tuple[str, str]] | None] = squeue_states,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, str]:
    """Poll until every job has ended; returns {job id: final state}.

    on_change(job_id, state, reason) is called for each new state or pending reason;
    on_warning(text) once for a job pending longer than pending_warn_s, and when squeue stops
    answering. Polls every second at first, then less often (at most every 30 s) as the wait grows.
    """
    start = clock()
    jobs = {j: _Watched(since=start) for j in job_ids}
    silent = False
    while live := [j for j, w in jobs.items() if w.state in ACTIVE]:
        states = poll(live)
        if states is None and not silent:
            on_warning("squeue does not answer; still waiting for the jobs")
        silent = states is None
        for jid in live if states is not None else ():
            w = jobs[jid]
            w.unseen = 0 if jid in states else w.unseen + 1
            if jid not in states and w.unseen < 2:  # one miss may be a race: wait for a second
                continue
            state, reason = states.get(jid, ("GONE", ""))
            if (state, reason) != (w.state, w.reason):
                w.since = clock() if state != w.state else w.since
                w.state, w.reason = state, reason
                on_change(jid, state, reason)
            if state == "PENDING" and not w.warned and clock() - w.since > pending_warn_s:
                w.warned = True
                on_warning(
                    f"job {jid} has been pending for {_duration(clock() - w.since)} "
                    f"(reason: {reason or 'none given'}); `scontrol show job {jid}` says more"
                )
        sleep(min(30.0, max(1.0, (clock() - start) / 20)))
    return {j: w.state for j, w in jobs.items()}


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def cancel(job_ids: Sequence[str]) -> None:
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True, timeout=60)


class _OnceFilter(logging.Filter):
    """submitit logs "Bypassing sacct error" at each of its polls on a cluster without accounting:
    the first passes, reworded into one line; the rest are dropped."""

    seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "Bypassing sacct error" not in record.getMessage():
            return True
        if self.seen:
            return False
        self.seen = True
        record.msg, record.args = "sacct does not work here (no accounting); repeats hidden", ()
        return True


@contextmanager
def quiet_submitit() -> Iterator[None]:
    log, once = logging.getLogger("submitit"), _OnceFilter()
    log.addFilter(once)
    try:
        yield
    finally:
        log.removeFilter(once)


# ---- inside a job --------------------------------------------------------------------------------
def run_in_job(overrides: list[str], force: bool = False) -> str:
    """The body of one SLURM job: one focalbench run in this process; returns its status.

    SLURM stops a job with SIGTERM (scancel, preemption) and warns it with SIGUSR2 signal_delay_s
    before its time limit (submitit asks for that): both end the run as Ctrl-C does, so it records
    itself `interrupted` and the next sweep resumes it from its checkpoint.
    """
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus:  # before torch loads: the CPUs of this job, not those of the shell that submitted it
        os.environ["OMP_NUM_THREADS"] = cpus
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from focalbench.utils import sigterm_as_interrupt

    previous = signal.signal(signal.SIGUSR2, _time_limit_near)
    try:
        with sigterm_as_interrupt():
            from focalbench.config import compose
            from focalbench.engine.run import run

            result = run(compose(overrides), force=force)
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc}): the next run of the sweep resumes it", flush=True)
        return "interrupted"
    finally:
        signal.signal(signal.SIGUSR2, previous)
    print(f"{result.run_id}: {result.status} {result.error}".strip(), flush=True)
    return result.status


def _time_limit_near(signum, frame):
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    raise KeyboardInterrupt("SLURM's time limit is near")
