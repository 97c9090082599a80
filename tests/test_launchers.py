"""Hydra launchers: the GPU-pool plugin is discovered and composes; the SLURM config composes; Hydra
multirun through the pool runs real jobs."""

import csv
import os
import subprocess
import sys
import warnings

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra


def _hydra_cfg(overrides):
    GlobalHydra.instance().clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with initialize_config_module("focalbench.conf", version_base="1.3"):
            return compose("config", overrides=overrides, return_hydra_config=True)


def test_gpu_pool_launcher_is_discovered():
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher

    names = {p.__name__ for p in Plugins.instance().discover(Launcher)}
    assert "GpuPoolLauncher" in names


def test_gpu_pool_launcher_config_composes():
    cfg = _hydra_cfg(
        ["hydra/launcher=gpu_pool", "hydra.launcher.gpus=[0,1]", "hydra.launcher.jobs_per_gpu=2"]
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("GpuPoolLauncher")
    assert list(launcher.gpus) == [0, 1] and launcher.jobs_per_gpu == 2


def test_submitit_slurm_config_composes():
    pytest.importorskip(
        "hydra_plugins.hydra_submitit_launcher", reason="installed by the dev extra"
    )
    cfg = _hydra_cfg(
        [
            "hydra/launcher=submitit_slurm",
            "hydra.launcher.partition=gpu",
            "hydra.launcher.array_parallelism=8",
        ]
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (
        launcher.partition == "gpu"
        and launcher.array_parallelism == 8
        and launcher.gpus_per_node == 1
    )


def test_sweep_with_slurm_launcher_dry_run(cli):
    result = cli("sweep", "loss=focal,bce", "--launcher", "submitit_slurm", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "hydra/launcher=submitit_slurm" in result.stdout and "-m" in result.stdout.split()


def test_unknown_launcher(cli):
    result = cli("sweep", "loss=focal", "--launcher", "nope")
    assert result.returncode == 2 and "choose from" in result.stderr


@pytest.mark.slow
def test_hydra_multirun_through_the_pool(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    cmd = [
        sys.executable,
        "-m",
        "focalbench.train",
        "-m",
        "experiment=smoke",
        "hparams_search=losses",  # a ready-made grid, its loss line replaced by the next override
        "loss=focal,bce",
        "data.train_images=8",
        "data.val_images=4",
        "hydra/launcher=gpu_pool",
        "hydra.launcher.jobs=2",
    ]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    with open(tmp_path / "results" / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["loss"] for r in rows) == ["bce", "focal"] and {r["status"] for r in rows} == {
        "ok"
    }


@pytest.mark.slow
def test_torchrun_two_cpu_processes_write_one_row(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "focalbench.train",
        "experiment=smoke",
        "data.train_images=8",
        "data.val_images=4",
        "train.batch_size=4",
        "train.device=cpu",
    ]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    with open(tmp_path / "results" / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["status"] == "ok"  # rank 0 alone writes
    assert (
        len(list((tmp_path / "results" / "runs").iterdir())) == 1
    )  # all ranks agreed on one folder
