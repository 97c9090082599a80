"""The plan of a sweep: a grid from Hydra's override grammar -> Jobs (one config each, with its run
id) -> what is done, failed before, or still to run. Every runner (local.py, slurm/) takes a Plan;
every strategy (grid.py, search.py, race.py) makes one.

Re-running a sweep skips ok jobs before anything is started or submitted and resumes the others
from their checkpoints; a job still running in another process is waited for, never started twice
(run lock). `hydra.launcher.*` overrides say where jobs run, not what they compute: they stay out
of the sweep id and the jobs' configs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from focalbench.config import RunConfig, compose, search_grid
from focalbench.errors import InputError
from focalbench.results.store import is_running, latest_rows, read_rows, safe_name

DONE = "done"
PENDING = "pending"
# the statuses of a latest attempt that a grid keeps until --retry-failed (interrupted: resumed)
KEPT = ("failed", "diverged", "pruned")


@dataclass
class Job:
    overrides: list[str]
    cfg: RunConfig
    # pending | done (an ok row) | failed (failed/diverged/pruned row, kept unless --retry-failed)
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
    return mark_states(plan, force, retry_failed)


def mark_states(plan: Plan, force: bool = False, retry_failed: bool = False) -> Plan:
    """Each job's state from runs.csv: done (an ok row), failed (a failed, diverged or pruned row:
    kept unless retry_failed), or pending, and whether another process is running it now (its run
    lock). A pruned row is final for the search that pruned it (search.py), not for a grid."""
    csv_path = Path(plan.jobs[0].cfg.results_dir) / "runs.csv"
    latest = latest_rows(read_rows(csv_path)) if csv_path.is_file() else {}
    for job in plan.jobs:
        job.previous = previous_status(latest, job.cfg)
        if job.previous == "ok" and not force:
            job.state = DONE
        elif job.previous in KEPT and not (retry_failed or force):
            job.state = "failed"
        job.elsewhere = job.state == PENDING and is_running(job.cfg.results_dir, job.run_id)
    return plan


def resolved(cfg: RunConfig) -> RunConfig:
    """cfg with its data-dependent words (loss.alpha, model.anchor_sizes) resolved, so that the plan
    knows the run id the job will record (engine/resolve.py; data code is imported only then)."""
    if not isinstance(cfg.loss.alpha, str) and not isinstance(
        getattr(cfg.model, "anchor_sizes", None), str
    ):
        return cfg
    from focalbench.engine.resolve import resolve_words

    return resolve_words(cfg)


def previous_status(latest: dict[str, dict[str, str]], cfg: RunConfig) -> str:
    """The status of a config's latest attempt, under its run id or the id an older schema gave it
    (RunConfig.run_ids): an ok row under either means done."""
    statuses = [latest[rid].get("status", "") for rid in cfg.run_ids if rid in latest]
    return "ok" if "ok" in statuses else (statuses[0] if statuses else "")
