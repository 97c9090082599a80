"""Launching: a sweep's plan, the runners that run it, and the strategies that decide what to run.

- plan.py      Job, Plan, grid expansion, run ids, what is done (every runner takes a Plan)
- report.py    the plan table, live progress, rows for jobs that ended without one, the summary
- local.py     runner: the CPU/GPU pool (one fresh process per job)
- slurm/       runner: request checks, submission as a job array, watching (squeue)
- execute.py   runs a Plan's pending jobs through one runner; the one door the strategies use
- grid.py      strategy: `focalbench sweep GRID` (every job of the grid)
- search.py    strategy: `--search tpe` (Optuna ask/tell)

Imports go down that list; no runner imports another, no strategy imports another. Imports nothing
at package level (SLURM jobs import focalbench.sweep.slurm.jobs before torch).
"""
