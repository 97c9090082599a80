"""The focalbench command line. Thin: each command's options and one call, then print. torch is
imported only by commands that train (`--help`, `evaluate`, `leaderboard` and `data check` start
fast).

- app.py      the Typer app, `main` (one-line errors, exit codes), shared printing
- run.py      train, pretrain, losses
- sweep.py    sweep (grid, --search, SLURM)
- results.py  leaderboard, compare, evaluate
- data.py     data synth | subset | check

Exit codes: 0 ok; 1 a check found problems or a run/sweep ended failed; 2 bad input (usage, config,
files); 130 interrupted. Errors are one line on stderr; `--debug` shows the traceback.
"""

import os

# Passive OpenMP waits, set before torch loads: when other processes share the cores (a sweep's
# jobs, a busy laptop) spinning threads slow a training step several-fold; idle cores cost nothing
# either way.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# importing a command module registers its commands; `--help` lists them in this order
# isort: off
from focalbench.cli import run, sweep, results, data  # noqa: E402, F401
from focalbench.cli.app import app, main  # noqa: E402

# isort: on

__all__ = ["app", "main"]
