"""`focalbench sweep --search tpe`: adaptive hyper-parameter search (Optuna's ask/tell API).

Search dimensions use the grammar of Hydra's Optuna sweeper: `loss.alpha=interval(0.05,0.95)`
(float), `tag(log,interval(0.1,5))` (log scale), `int(interval(1,4))` (integer), `choice(a,b)` or
`a,b` (categorical). Every other override is fixed for all trials.

Every trial is an ordinary run: the same run id, CSV row and run folder as a sweep job (the study's
runs live under results/sweeps/<study>/). A trial whose config already has an ok row is not trained
again; it is told to the study from the row. The study lives in an RDB file
(results/optuna/<study>.db), so the same command resumes it: trials that were running when the
last call was stopped are finished first (their runs resume from their checkpoints), then new ones
are asked for until `trials` have ended. Trials run in batches of the pool's size; each batch is
asked for at once, so with --jobs N the sampler sees the results of the previous batch only.

With --prune NAME each trial's run gets the `prune` config section (the study, its storage, the
trial's id): after each epoch it reports the mAP of a fixed validation subset to its trial, and the
pruner may stop it (engine/prune.py). Such a run ends `pruned` and is told as PRUNED; like an ok
row, a pruned row is final for the search (never trained again), and pruned is no failure.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from focalbench.errors import InputError
from focalbench.sweep.search_prune import check_prune, prune_lines

SAMPLERS = ("tpe",)
FINAL = ("ok", "pruned")  # a trial whose config has such a row is told from it, never trained again
DIGITS = 4  # sampled floats are rounded for the override: readable run ids and CSV cells


@dataclass(frozen=True)
class Space:
    """The fixed overrides and the search dimensions (key -> optuna distribution)."""

    fixed: list[str]
    dims: dict[str, Any]


def is_search_override(override: str) -> bool:
    """Whether an override uses the search-only grammar (`interval(...)`)."""
    return "interval(" in override.partition("=")[2]


def parse_space(overrides: Sequence[str]) -> Space:
    """Overrides -> Space. interval(lo,hi) needs lo < hi; a dimension needs at least two values."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from hydra.errors import HydraException
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    fixed: list[str] = []
    dims: dict[str, Any] = {}
    for line in overrides:
        try:
            (parsed,) = OverridesParser.create().parse_overrides([line])
        except HydraException as exc:
            raise InputError(f"cannot parse override {line!r}: {str(exc).splitlines()[0]}") from exc
        if not parsed.is_sweep_override():
            fixed.append(line)
            continue
        key, sweep = parsed.get_key_element(), parsed._value
        if isinstance(sweep, IntervalSweep):
            lo, hi = sweep.start, sweep.end
            if not lo < hi:
                raise InputError(f"{line}: lo must be below hi (got {lo:g} and {hi:g})")
            log = "log" in sweep.tags
            if log and lo <= 0:
                raise InputError(f"{line}: a log scale needs lo > 0")
            if isinstance(lo, int) and isinstance(hi, int):
                dims[key] = IntDistribution(lo, hi, log=log)
            else:
                dims[key] = FloatDistribution(float(lo), float(hi), log=log)
        elif isinstance(sweep, ChoiceSweep):
            dims[key] = CategoricalDistribution(list(sweep.list))
        elif isinstance(sweep, RangeSweep):
            dims[key] = CategoricalDistribution(list(sweep.range()))
        else:
            raise InputError(f"{line!r}: not a search dimension; use interval(lo,hi) or choice(..)")
    if not dims:
        raise InputError(
            "--search needs at least one search dimension, e.g. loss.gamma=interval(0,5)"
        )
    return Space(fixed, dims)


def trial_overrides(space: Space, params: dict[str, Any]) -> list[str]:
    """The run's overrides for a trial's params (floats rounded to DIGITS decimals)."""
    from focalbench.config import override_value

    extra = []
    for key, value in params.items():
        if isinstance(value, float):
            value = round(value, DIGITS)
        extra.append(f"{key}={override_value(value)}")
    return [*space.fixed, *extra]


def study_name(space: Space, objectives: Sequence[str], sampler: str, seed: int) -> str:
    """Same command -> same study (and folder), so running it again resumes the search."""
    dims = sorted(f"{k}={v!r}" for k, v in space.dims.items())
    key = " ".join([*sorted(space.fixed), *dims, *objectives, sampler, str(seed)])
    return "search-" + hashlib.sha1(key.encode()).hexdigest()[:8]


def directions(objectives: Sequence[str]) -> list[str]:
    """Optuna directions of the objective metrics; an unknown metric is bad input."""
    from focalbench.results.schema import LOWER_IS_BETTER, METRICS

    valid = [m for m in METRICS if m not in ("wall_s", "imgs_per_s")]
    out = []
    for m in objectives:
        if m not in valid:
            raise InputError(f"--objective {m!r} is not a metric; choose from {valid}")
        out.append("minimize" if m in LOWER_IS_BETTER else "maximize")
    if len(set(objectives)) != len(objectives):
        raise InputError(f"--objective: each metric once, got {list(objectives)}")
    return out


def objective_values(row: dict[str, str], objectives: Sequence[str]) -> list[float] | None:
    """The objectives from an ok CSV row; None if one is missing or not finite (told as failed)."""
    values = []
    for m in objectives:
        try:
            v = float(row.get(m, ""))
        except ValueError:
            return None
        if not math.isfinite(v):
            return None
        values.append(v)
    return values


def storage_url(name: str, results_dir: str | Path) -> str:
    """The study's RDB, results/optuna/<name>.db, as an absolute sqlite URL."""
    return f"sqlite:///{(Path(results_dir) / 'optuna' / f'{name}.db').resolve()}"


def make_study(name: str, results_dir: str | Path, objectives: Sequence[str], trials: int,
               seed: int, pruner=None):  # fmt: skip
    """Create or load the study in results/optuna/<name>.db with a seeded TPE sampler.

    TPE's random start-up phase is a third of the budget (at most Optuna's default of 10), so a
    short search still spends most of its trials on the model. The pruner (engine/prune.py) judges
    in the trials' runs; the study holds it too, for TPE, which samples hyperband's trials bracket
    by bracket.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    (Path(results_dir) / "optuna").mkdir(parents=True, exist_ok=True)
    sampler = optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=min(10, max(2, trials // 3)), multivariate=True
    )
    return optuna.create_study(
        study_name=name,
        storage=storage_url(name, results_dir),
        sampler=sampler,
        pruner=pruner,
        directions=directions(objectives),
        load_if_exists=True,
    )


def _told(study, number: int, row: dict[str, str] | None, objectives: Sequence[str]) -> str:
    """Tell the study how trial `number` ended, from its run's latest row; returns its status."""
    from optuna.trial import TrialState

    status = (row or {}).get("status", "not run")
    if status == "pruned":
        study.tell(number, state=TrialState.PRUNED)
        return status
    values = objective_values(row, objectives) if status == "ok" else None
    if values is None:
        study.tell(number, state=TrialState.FAIL)
    else:
        study.tell(number, values if len(values) > 1 else values[0])
    return status


def run_search(
    overrides: Sequence[str],
    trials: int,
    objectives: Sequence[str] = ("mAP",),
    sampler: str = "tpe",
    seed: int = 0,
    jobs: int = 1,
    gpus: Sequence[int] | None = None,
    jobs_per_gpu: int = 1,
    console=None,
    prune: str | None = None,
) -> int:
    """Run (or resume) the search until `trials` trials have ended; print the trials and the best.
    prune: a pruner's name (engine/prune.py PRUNERS), which stops bad trials after an epoch.

    Returns the exit code: 1 if a trial's run failed or diverged, else 0 (pruned is no failure).
    """
    from optuna.trial import TrialState
    from rich.console import Console

    from focalbench.config import compose

    console = console or Console()
    if sampler not in SAMPLERS:
        raise InputError(f"--search {sampler!r}; choose from {list(SAMPLERS)}")
    if trials < 1:
        raise InputError(f"--trials {trials}: a search needs at least 1 trial")
    if not objectives:
        objectives = ("mAP",)
    directions(objectives)  # bad objective names fail before anything is written
    pruner = check_prune(prune, objectives, trials)  # engine/prune.py's, for TPE (make_study)
    space = parse_space(overrides)
    name = study_name(space, objectives, sampler, seed)
    first = compose([*trial_overrides(space, _midpoint(space)), f"sweep_id='{name}'"])
    results_dir = first.results_dir
    study = make_study(name, results_dir, objectives, trials, seed, pruner)
    url = storage_url(name, results_dir)  # the trials' runs open the study there to report
    pruning = prune_lines(name, url, prune, trials, space.fixed) if prune else []
    ended = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
    n_ended = len(study.get_trials(deepcopy=False, states=ended))
    console.print(
        f"[bold]search {name}[/]: {trials} trials of {sampler} on {', '.join(objectives)}; "
        f"{n_ended} ended before; study in {Path(results_dir) / 'optuna' / (name + '.db')}"
        + (f"; trials pruned by {prune}" if prune else "")
    )
    failed = 0
    width = max(1, jobs if not gpus else len(gpus) * jobs_per_gpu)
    while n_ended < trials:
        batch = _next_batch(study, space, width, trials - n_ended)
        run_kw = {"jobs": jobs, "gpus": gpus, "jobs_per_gpu": jobs_per_gpu, "console": console}
        failed += _run_batch(study, space, name, batch, objectives, run_kw, pruning)
        n_ended = len(study.get_trials(deepcopy=False, states=ended))
    console.print(trials_table(study, space, objectives))
    if len(objectives) == 2 and _any_complete(study):
        path = Path(results_dir) / "sweeps" / name / "pareto.png"
        plot_front(study, objectives, path)
        console.print(f"Pareto front: {path}")
    return 1 if failed else 0


def _next_batch(study, space: Space, width: int, left: int) -> list[tuple[int, dict, int]]:
    """[(number, params, trial id)]: the trials left running by a stopped call first (their runs
    resume), then new ones asked for, up to `width`; `left` at most."""
    from optuna.trial import TrialState

    running = study.get_trials(states=(TrialState.RUNNING,))
    batch = [(t.number, t.params, t._trial_id) for t in running]
    while len(batch) < min(width, left):
        trial = study.ask(dict(space.dims))
        batch.append((trial.number, trial.params, trial._trial_id))
    return batch[:left]


def _run_batch(study, space: Space, name: str, batch: list, objectives: Sequence[str],
               run_kw: dict[str, Any], pruning: Sequence[str] = ()) -> int:  # fmt: skip
    """Run one batch of asked trials [(number, params, trial id)] as one plan (a trial whose config
    has an ok or pruned row is told from the row, not trained again), tell the study; returns how
    many ended neither ok nor pruned. `pruning`: the prune.* overrides (prune_lines) or none."""
    from focalbench.config import compose
    from focalbench.results.store import latest_rows, read_rows
    from focalbench.sweep.execute import execute_plan
    from focalbench.sweep.plan import Job, Plan, previous_status, resolved

    plan = Plan(name)
    numbers: dict[str, list[int]] = {}  # two trials may sample one config: the first one runs
    for number, params, trial_id in batch:
        extra = [*pruning, f"prune.trial={trial_id}"] if pruning else []
        job_overrides = [*trial_overrides(space, params), *extra]
        cfg = resolved(compose([*job_overrides, f"sweep_id='{name}'"]))
        numbers.setdefault(cfg.run_id, []).append(number)
        if len(numbers[cfg.run_id]) == 1:
            plan.jobs.append(Job(job_overrides, cfg))
    csv_path = Path(plan.jobs[0].cfg.results_dir) / "runs.csv"
    latest = latest_rows(read_rows(csv_path)) if csv_path.is_file() else {}
    todo = [j for j in plan.jobs if previous_status(latest, j.cfg) not in FINAL]
    if todo:
        execute_plan(Plan(name, todo), **run_kw)
        latest = latest_rows(read_rows(csv_path)) if csv_path.is_file() else {}
    failed = 0
    for job in plan.jobs:
        for number in numbers[job.run_id]:
            row = _final_row([latest[rid] for rid in job.cfg.run_ids if rid in latest])
            status = _told(study, number, row, objectives)
            failed += status not in FINAL
            reused = "" if job in todo else f" (from its {status} row)"
            shown = [o for o in job.overrides[len(space.fixed) :] if not o.startswith("prune.")]
            params = " ".join(shown)
            error = (row or {}).get("error", "") if status == "pruned" else ""
            why = f" ({error.removeprefix('pruned ')})" if error else ""
            run_kw["console"].print(f"trial {number}: {status}{reused} {params}{why}")
    return failed


def _final_row(rows: list[dict[str, str]]) -> dict[str, str] | None:
    """Of a config's latest rows (one per id of RunConfig.run_ids): an ok one, else a pruned one,
    else the first; None without rows."""
    for status in FINAL:
        found = next((r for r in rows if r.get("status") == status), None)
        if found is not None:
            return found
    return rows[0] if rows else None


def plot_front(study, objectives: Sequence[str], path: Path) -> None:
    """Every completed trial in the plane of the two objectives, the Pareto front joined up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    front = sorted(study.best_trials, key=lambda t: t.values[0])
    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=120)
    ax.scatter([t.values[0] for t in done], [t.values[1] for t in done], s=22, c="0.6",
               label="trials")  # fmt: skip
    ax.plot([t.values[0] for t in front], [t.values[1] for t in front], "o-", c="C3", ms=5,
            label="Pareto front")  # fmt: skip
    for t in front:
        ax.annotate(str(t.number), (t.values[0], t.values[1]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")  # fmt: skip
    ax.set_xlabel(objectives[0] + (" (lower is better)" if _lower(objectives[0]) else ""))
    ax.set_ylabel(objectives[1] + (" (lower is better)" if _lower(objectives[1]) else ""))
    ax.set_title(f"{study.study_name}: {len(done)} trials", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _lower(metric: str) -> bool:
    from focalbench.results.schema import LOWER_IS_BETTER

    return metric in LOWER_IS_BETTER


def _midpoint(space: Space) -> dict[str, Any]:
    """Some valid params (to compose the fixed part once and learn results_dir)."""
    out = {}
    for key, dist in space.dims.items():
        choices = getattr(dist, "choices", None)
        out[key] = choices[0] if choices is not None else dist.low
    return out


def trials_table(study, space: Space, objectives: Sequence[str]):
    """All ended trials with their params and objectives; the best (or the Pareto front) marked."""
    from optuna.trial import TrialState
    from rich.table import Table

    best = {t.number for t in study.best_trials} if _any_complete(study) else set()
    title = "best" if len(objectives) == 1 else "Pareto front"
    table = Table(title=f"study {study.study_name} (* = {title})", title_justify="left")
    for col in ("trial", *space.dims, *objectives, "state"):
        table.add_column(col, justify="right" if col not in ("state",) else "left")
    for t in study.get_trials(deepcopy=False):
        # a pruned trial's value is its last subset mAP (Optuna's tell), not the objective: hidden
        vals = (t.values or []) if t.state == TrialState.COMPLETE else []
        state = t.state.name.lower() if t.state != TrialState.COMPLETE else "ok"
        if t.state == TrialState.PRUNED and t.last_step is not None:
            state = f"pruned at epoch {t.last_step + 1}"  # steps count epochs from 0
        table.add_row(
            f"{t.number}{'*' if t.number in best else ''}",
            *(_fmt(t.params.get(k)) for k in space.dims),
            *(f"{v:.4f}" for v in vals),
            *([""] * (len(objectives) - len(vals))),
            state,
        )
    return table


def _any_complete(study) -> bool:
    from optuna.trial import TrialState

    return bool(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _fmt(value: Any) -> str:
    return f"{round(value, DIGITS):g}" if isinstance(value, float) else str(value)
