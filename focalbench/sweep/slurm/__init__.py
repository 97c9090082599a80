"""The SLURM runner: request.py (what the partition offers, a request that fits it, submitit's
executor), run.py (submit a Plan's pending jobs as one array and follow them), jobs.py (squeue
states, the watch loop, and the body that runs inside each job). Imports nothing at package level:
submitit unpickles jobs.run_in_job inside each job, which sets its thread count before torch loads.
"""
