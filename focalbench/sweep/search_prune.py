"""What `--prune NAME` adds to `focalbench sweep --search tpe` (search.py): the check of the option,
the pruner's settings for a search of N trials, and the `prune.*` overrides that let each trial's
run judge itself after every epoch (engine/prune.py, config PruneCfg).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from focalbench.errors import InputError


def prune_settings(trials: int) -> tuple[int, int]:
    """(startup, warmup) of --prune for a search of `trials` trials.

    startup: a quarter of the budget, at least 1 and at most Optuna's default of 5, trains to the
    end before any trial is judged: the bar is the median (or percentile) of the completed trials'
    curves, and one or two curves make a noisy bar, while waiting for more would leave a short
    search nothing to prune. warmup 1: the first epoch is never judged; it is mostly learning-rate
    warm-up, where every config's mAP is near 0 and their order is noise.
    """
    return min(5, max(1, trials // 4)), 1


def check_prune(prune: str | None, objectives: Sequence[str], trials: int) -> Any:
    """The Optuna pruner of --prune NAME (None without it); bad input raises InputError before
    anything is written."""
    if prune is None:
        return None
    from focalbench.engine.prune import make_pruner

    pruner = make_pruner(prune, *prune_settings(trials))
    if len(objectives) > 1:  # Optuna's Trial.report takes one value
        raise InputError(
            f"--prune judges one objective per epoch; got --objective {' '.join(objectives)}"
        )
    return pruner


def prune_lines(
    study: str, storage: str, pruner: str, trials: int, given: Sequence[str]
) -> list[str]:
    """The `prune.*` overrides of every trial's run (search.py adds prune.trial per trial); a key
    the user gave among the fixed overrides (`given`) keeps the user's value."""
    startup, warmup = prune_settings(trials)
    lines = [f"prune.pruner={pruner}", f"prune.study='{study}'", f"prune.storage='{storage}'",
             f"prune.startup={startup}", f"prune.warmup={warmup}"]  # fmt: skip
    keys = {o.lstrip("+~").partition("=")[0] for o in given}
    return [line for line in lines if line.partition("=")[0] not in keys]
