"""`focalbench sweep GRID --race`: seeds raced round by round, hopeless configs dropped early.

Round r trains seed r - 1 of every config still in the race, as one batch for the runner (the
local pool, --gpus, or a SLURM array: execute.py). After each round metrics/race.py decides, from
the rows and run folders alone: every racing config is compared with the current best, its
variance the image part (a paired bootstrap over the validation images, each side's seeds held)
plus a seed part pooled over the grid's configs with two seeds or more (so round 1 decides
nothing); Holm within a round, the level split over the rounds. A config whose interval of
best - config excludes 0 leaves the race; with --margin D one whose interval lies inside [-D, D]
is tied and stops; from its second seed on, one whose chance to leave by --max-seeds is below
--futility (conditional power, metrics/futility.py) stops within noise of the best. The race
ends when one config is left, the rest are tied, futile or out, or --max-seeds is reached.

Every decision is recomputed from runs.csv and the run folders (metrics/race.replay), so the same
command resumes a stopped race exactly: finished runs are skipped, as in any sweep. Each run is an
ordinary run with its run id (the seed is part of it), so a full grid of the same configs later
skips the race's runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from focalbench.config import RunConfig, compose
from focalbench.errors import InputError
from focalbench.metrics.futility import DEFAULT_FUTILITY
from focalbench.results.store import latest_rows, read_rows
from focalbench.sweep.execute import execute_plan
from focalbench.sweep.plan import (
    Job,
    Plan,
    default_sweep_id,
    expand_grid,
    mark_states,
    resolved,
)

DEFAULT_MAX_SEEDS = 5


@dataclass
class Racer:
    """One config of the race: its overrides (no seed), a name (what tells it apart), and per
    seed its config (RunConfig of seed s is seeds[s])."""

    name: str
    overrides: list[str]
    seeds: list[RunConfig]


def check_options(
    metric: str, max_seeds: int, level: float, margin: float | None, futility: float
) -> None:
    from focalbench.metrics.resample import METRICS

    if max_seeds < 2:
        raise InputError(f"--max-seeds {max_seeds}: a race needs at least 2 seeds")
    if not 0 < level < 1:
        raise InputError(f"--level {level}: choose a value in (0, 1), e.g. 0.05")
    if margin is not None and not margin > 0:
        raise InputError(f"--margin {margin}: choose a difference > 0 (e.g. 0.01 mAP)")
    if not 0 <= futility < 1:
        raise InputError(f"--futility {futility}: choose a chance in [0, 1), e.g. 0.2 (0: off)")
    if metric not in METRICS:
        raise InputError(
            f"--metric {metric!r} is not scored by the paired bootstrap; choose from "
            f"{list(METRICS)}"
        )


def make_racers(overrides: Sequence[str], max_seeds: int, sweep_id: str) -> list[Racer]:
    """The grid's configs, each with its per-seed configs (resolved: their run ids are final)."""
    if any(o.lstrip("+~").partition("=")[0] == "seed" for o in overrides):
        raise InputError("--race chooses the seeds (0, 1, ... up to --max-seeds): drop seed=...")
    grid = expand_grid(overrides)
    common = set.intersection(*(set(g) for g in grid)) if grid else set()
    racers: list[Racer] = []
    seen: set[str] = set()
    for job in grid:
        seeds = [
            resolved(compose([*job, f"seed={s}", f"sweep_id='{sweep_id}'"]))
            for s in range(max_seeds)
        ]
        if seeds[0].config_id in seen:  # two spellings of one config: race it once
            continue
        seen.add(seeds[0].config_id)
        name = " ".join(o for o in job if o not in common) or " ".join(job)
        racers.append(Racer(name, list(job), seeds))
    if len(racers) < 2:
        raise InputError(
            f"--race needs a grid of at least two configs, got {len(racers)}: give a list such "
            "as loss=focal,bce"
        )
    return racers


def history(racers: list[Racer], csv_path: Path, metric: str) -> dict[str, list[float]]:
    """Each config's metric per seed, seed 0 up to the first seed without an ok row."""
    latest = latest_rows(read_rows(csv_path)) if csv_path.is_file() else {}
    out: dict[str, list[float]] = {}
    for racer in racers:
        values: list[float] = []
        for cfg in racer.seeds:
            row = _ok_row(latest, cfg)
            value = _number(row.get(metric, "")) if row else math.nan
            if not math.isfinite(value):
                break
            values.append(value)
        out[racer.name] = values
    return out


def earlier_seed_variance(racers: list[Racer], csv_path: Path, metric: str):
    """A prior seed variance (metrics/race.SeedVariance, df finite) pooled within the configs of
    earlier ok runs in runs.csv that have >= 2 seeds and equal a racer's config but for the loss
    section (same data, model, schedule and budget; a racer's own config does not count: the
    race pools those itself). None when there are none."""
    from focalbench.metrics.race import SeedVariance, pooled_seed_variance
    from focalbench.results.run_configs import flat_science, load
    from focalbench.results.run_files import folder_of

    def but_loss(cfg: RunConfig) -> tuple:
        return tuple(sorted((k, v) for k, v in flat_science(cfg).items()
                            if not k.startswith("loss.")))  # fmt: skip

    wanted = {but_loss(r.seeds[0]) for r in racers}
    own = {r.seeds[0].config_id for r in racers}
    groups: dict[str, list[float]] = {}
    latest = latest_rows(read_rows(csv_path)) if csv_path.is_file() else {}
    for row in latest.values():
        value = _number(row.get(metric, ""))
        if row.get("status") != "ok" or not math.isfinite(value):
            continue
        cfg = load(folder_of(row, csv_path))
        if cfg is None or cfg.config_id in own or but_loss(cfg) not in wanted:
            continue
        groups.setdefault(cfg.config_id, []).append(value)
    pooled = pooled_seed_variance(groups)  # the race's own pooling, over the earlier configs
    if pooled is None:
        return None
    k = sum(len(v) >= 2 for v in groups.values())
    return SeedVariance(
        pooled.value, pooled.df, f"earlier runs: {k} other-loss configs of this budget"
    )


def write_race_csv(rnd, racers: list[Racer], metric: str, max_seeds: int, path: Path) -> None:
    """The race's decisions so far, one row per config (config_id for the leaderboard's marks);
    rewritten after every round, atomically."""
    import csv
    import io
    import os

    ids = {r.name: r.seeds[0].config_id for r in racers}
    buf = io.StringIO()
    cols = ["config_id", "config", "status", "round", "seeds", "max_seeds", "metric", "mean",
            "best_minus_config", "lo", "hi", "seed_variance", "chance_by_cap"]  # fmt: skip
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for d in rnd.decisions:
        writer.writerow([ids[d.config], d.config, d.status, d.round, d.n_seeds, max_seeds, metric,
                         f"{d.mean:.6g}", f"{d.diff:.6g}", f"{d.lo:.6g}", f"{d.hi:.6g}",
                         d.seed_source, f"{d.cp:.6g}"])  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, path)


def _ok_row(latest: dict[str, dict[str, str]], cfg: RunConfig) -> dict[str, str] | None:
    rows = [latest[rid] for rid in cfg.run_ids if rid in latest]
    return next((r for r in rows if r.get("status") == "ok"), None)


def _number(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        return math.nan


class ImageVariances:
    """metrics/race.ImageVariance from the run folders: a paired bootstrap over the validation
    images of two configs' first n seeds (each side's seeds held fixed); cached by pair."""

    def __init__(self, racers: list[Racer], csv_path: Path, metric: str, n_boot: int) -> None:
        self.by_name = {r.name: r for r in racers}
        self.csv_path, self.metric, self.n_boot = csv_path, metric, n_boot
        self.cache: dict[tuple[str, str, int, int], float] = {}
        self.scorers: dict[str, Any] = {}
        self.gts: dict[Path, Any] = {}

    def __call__(self, best: str, config: str, n_best: int, n_config: int) -> float:
        from focalbench.metrics.bootstrap import image_variance

        key = (best, config, n_best, n_config)
        if key not in self.cache:
            a = self._scorers(best, n_best)
            b = self._scorers(config, n_config)
            self.cache[key] = image_variance(a, b, self.metric, self.n_boot)
        return self.cache[key]

    def run_noise(self, name: str) -> float:
        """metrics/race.RunNoise: half the image-bootstrap variance of seed 0 - seed 1."""
        from focalbench.metrics.bootstrap import image_variance

        key = (name, name, 0, 1)
        if key not in self.cache:
            seed_0, seed_1 = self._scorers(name, 2)
            self.cache[key] = image_variance([seed_0], [seed_1], self.metric, self.n_boot) / 2
        return self.cache[key]

    def _scorers(self, name: str, n: int) -> list:
        from focalbench.results.compare import Run, scorers
        from focalbench.results.run_files import folder_of

        latest = latest_rows(read_rows(self.csv_path))
        out = []
        for seed, cfg in enumerate(self.by_name[name].seeds[:n]):
            key = cfg.run_id
            if key not in self.scorers:
                row = _ok_row(latest, cfg)
                assert row is not None, f"no ok row for {name} seed {seed}"
                run = Run(row["run_id"], folder_of(row, self.csv_path), seed)
                (self.scorers[key],) = scorers([run], [self.metric], self.gts)
            out.append(self.scorers[key])
        return out


def round_plan(
    sweep_id: str, racers: list[Racer], names: list[str], seed: int, retry_failed: bool
) -> Plan:
    """The jobs of one round: seed `seed` of the configs named, their states as any sweep's."""
    by_name = {r.name: r for r in racers}
    jobs = [Job([*by_name[n].overrides, f"seed={seed}"], by_name[n].seeds[seed]) for n in names]
    return mark_states(Plan(sweep_id, jobs), retry_failed=retry_failed)


def run_race(
    overrides: Sequence[str],
    *,
    max_seeds: int = DEFAULT_MAX_SEEDS,
    metric: str = "mAP",
    level: float = 0.05,
    margin: float | None = None,
    futility: float = DEFAULT_FUTILITY,
    jobs: int = 1,
    gpus: Sequence[int] | None = None,
    jobs_per_gpu: int = 1,
    retry_failed: bool = False,
    slurm: dict[str, Any] | None = None,
    console=None,
    n_boot: int = 1000,
) -> int:
    """Race the grid's configs (or resume the race); print each round and the end table. Returns
    the exit code: 1 when a run of a round did not end ok (the race stops there; the same command
    resumes it, --retry-failed re-runs the failed run)."""
    from rich.console import Console

    from focalbench.metrics.race import replay
    from focalbench.results.schema import LOWER_IS_BETTER

    console = console or Console()
    check_options(metric, max_seeds, level, margin, futility)
    sweep_id = default_sweep_id([*overrides, "--race"])
    racers = make_racers(overrides, max_seeds, sweep_id)
    csv_path = Path(racers[0].seeds[0].results_dir) / "runs.csv"
    image_var = ImageVariances(racers, csv_path, metric, n_boot)
    prior = earlier_seed_variance(racers, csv_path, metric)
    rule = {"max_seeds": max_seeds, "level": level, "margin": margin, "futility": futility,
            "prior": prior, "run_noise": image_var.run_noise,
            "lower_is_better": metric in LOWER_IS_BETTER}  # fmt: skip
    console.print(f"[bold]race {sweep_id}[/]: {len(racers)} configs, up to {max_seeds} seeds each, "
                  f"on {metric} at level {level}" + (f", tied within ±{margin}" if margin else "")
                  + (f", futile below {futility:g} conditional power" if futility else "")
                  + (f"; prior seed variance from {prior.source}" if prior else ""))  # fmt: skip
    shown, race_csv = 0, csv_path.parent / "sweeps" / sweep_id / "race.csv"
    while True:
        rounds = replay(history(racers, csv_path, metric), image_var, **rule)
        for rnd in rounds[shown:]:  # a resumed race prints the rounds it replayed too
            console.print(round_line(rnd))
        shown = len(rounds)
        if rounds:
            write_race_csv(rounds[-1], racers, metric, max_seeds, race_csv)
            if rounds[-1].finished:
                break
        names = rounds[-1].to_train() if rounds else [r.name for r in racers]
        plan = round_plan(sweep_id, racers, names, len(rounds), retry_failed)
        failed = [j for j in plan.jobs if j.state == "failed"]
        failed_now = execute_plan(plan, jobs, gpus, jobs_per_gpu, console=console, slurm=slurm)
        if failed or failed_now:
            console.print(
                f"[red]round {len(rounds) + 1}: a run did not end ok[/]; the race stops here "
                "(the same command resumes it; --retry-failed re-runs failed runs)"
            )
            return 1
    console.print(race_table(rounds[-1], racers, metric))
    return 0


def round_line(rnd) -> str:
    """One line per round: the best, who left, and which seed variance the intervals used."""
    text = f"round {rnd.round}: best {rnd.best}"
    for status, what in (("out", "out"), ("tied", "tied"), ("futile", "inseparable by the cap")):
        left = [d.config for d in rnd.decisions if d.status == status and d.round == rnd.round]
        if left:
            text += f"; {what}: {', '.join(left)}"
    text += f"; seed variance: {rnd.decisions[0].seed_source}"
    return text + (f"; the race ends: {rnd.why}" if rnd.finished else "")


def race_table(rnd, racers: list[Racer], metric: str):
    """Per config: seeds run, mean, the decision and its interval of best - config."""
    from rich.table import Table

    table = Table(title=f"race on {metric}: {rnd.why}", title_justify="left")
    for col in ("config", "seeds", metric, "decision", "best − config", "interval"):
        table.add_column(col, justify="left" if col in ("config", "decision") else "right")
    order = sorted(rnd.decisions, key=lambda d: (d.status != "best", -d.n_seeds, d.diff))
    for d in order:
        decision = {
            "best": "best",
            "tied": f"tied (round {d.round})",
            "futile": f"within noise, stopped at round {d.round} ({d.cp:.0%} chance by the cap)",
            "noise_at_cap": "within noise at the cap",
            "out": f"out at round {d.round}",
        }.get(d.status, d.status)
        interval = "" if math.isnan(d.lo) else f"[{d.lo:+.4f}, {d.hi:+.4f}]"
        diff = "" if d.status == "best" else f"{d.diff:+.4f}"
        table.add_row(d.config, str(d.n_seeds), f"{d.mean:.4f}", decision, diff, interval)
    table.caption = f"seed variance: {rnd.decisions[0].seed_source}"
    return table
