"""Run a Plan's pending jobs with live progress, in the local pool (local.py) or as one SLURM job
array (slurm/): the one door every strategy (grid.py, search.py, race.py) runs jobs through.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from focalbench.sweep.local import run_local, slot_envs
from focalbench.sweep.plan import Plan
from focalbench.sweep.report import JobsProgress


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
    when `slurm` holds a fitted request (slurm.request.slurm_request). Returns how many did not end
    ok. Ctrl-C or SIGTERM stops (or cancels) the jobs, which record themselves `interrupted`."""
    from rich.console import Console

    todo = plan.to_run
    if not todo:
        return 0
    with JobsProgress(console or Console(), todo) as view:
        if slurm is not None:
            from focalbench.sweep.slurm.run import run_on_slurm

            statuses = run_on_slurm(plan, todo, slurm, force, view)
        else:
            statuses = run_local(plan, todo, slot_envs(jobs, gpus, jobs_per_gpu), force, view)
    return sum(status != "ok" for status in statuses.values())
