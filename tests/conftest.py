"""Shared fixtures: run the real CLI in a temp folder, on tiny data."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

# as the CLI does, before any test imports torch
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]

# the smallest full run: a train + evaluate of a few seconds, for tests that need many of them
TINY = [
    "experiment=smoke",
    "data.train_images=4",
    "data.val_images=2",
    "data.image_size=64",
    "train.batch_size=2",
    "train.eval_batch_size=2",
    "train.threads=1",
]


@pytest.fixture
def cli(tmp_path):
    """Run `focalbench ARGS` in a fresh process with tmp_path as working dir; returns
    CompletedProcess."""

    def run(*args, timeout=300, env=None):
        full_env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "2", **(env or {})}
        full_env = {k: v for k, v in full_env.items() if v is not None}  # None: unset the variable
        return subprocess.run(
            [sys.executable, "-m", "focalbench", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
        )

    return run
