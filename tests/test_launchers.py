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
    assert launcher._target_.endswith("FocalbenchSlurmLauncher")
    assert launcher.partition == "gpu" and launcher.array_parallelism == 8
    # read from sinfo at submission: 1 GPU where the partition has GPUs, else 0; a memory share
    assert launcher.gpus_per_node is None and launcher.mem_gb is None


def test_sweep_with_slurm_launcher_dry_run(cli):
    result = cli("sweep", "loss=focal,bce", "--launcher", "submitit_slurm", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "2 jobs" in result.stdout and "each job asks for 1 CPU(s)" in result.stdout


def _gpu_pool(tmp_path, monkeypatch, codes):
    """The gpu_pool launcher with jobs that just exit with the given codes (job N: codes[N])."""
    from hydra_plugins.focalbench_launcher.gpu_pool_launcher import GpuPoolLauncher

    def fake_job_command(overrides, extra=()):
        code = int(overrides[0].partition("=")[2])
        script = f"import sys; print('last words of job {code}'); sys.exit({code})"
        return [sys.executable, "-c", script]

    monkeypatch.setattr("focalbench.sweep.local.job_command", fake_job_command)
    launcher = GpuPoolLauncher(jobs=2, log_dir=str(tmp_path))
    return launcher.launch([[f"code={c}"] for c in codes], initial_job_idx=0)


def test_gpu_pool_launcher_reports_each_jobs_exit_status(tmp_path, monkeypatch):
    from hydra.core.utils import JobStatus

    ok, failed = _gpu_pool(tmp_path, monkeypatch, [0, 3])
    assert ok.status == JobStatus.COMPLETED and ok.return_value == 0
    assert failed.status == JobStatus.FAILED
    with pytest.raises(RuntimeError, match=r"job code=3: exit code 3: last words of job 3 \(log: "):
        _ = failed.return_value  # what Hydra's sweeper reads: it raises the job's error


def test_unknown_launcher(cli):
    result = cli("sweep", "loss=focal", "--launcher", "nope")
    assert result.returncode == 2 and "choose from" in result.stderr


def test_a_failed_job_fails_hydras_multirun(tmp_path):
    """Hydra's own multirun through gpu_pool exits non-zero and names the job that failed (every
    job was reported COMPLETED before, whatever its exit code)."""
    env = {**os.environ, "WANDB_MODE": "disabled"}
    cmd = [
        sys.executable,
        "-m",
        "focalbench.train",
        "-m",
        "train.epochs=-1",
        "hydra/launcher=gpu_pool",
    ]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "job train.epochs=-1: exit code 2: error: train.epochs=-1 is out of range" in (
        result.stderr
    )


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


def test_slurm_launcher_reports_a_job_without_a_result_as_failed(tmp_path):
    """A SLURM job cancelled before it wrote submitit's result file fails the multirun instead of
    being waited for (on sacct) forever."""
    pytest.importorskip("submitit")
    from types import SimpleNamespace

    from hydra.core.utils import JobStatus

    from hydra_plugins.focalbench_launcher.slurm_launcher import _job_return

    paths = SimpleNamespace(result_pickle=tmp_path / "none.pkl", stdout=tmp_path / "7_0.out")
    ret = _job_return(SimpleNamespace(job_id="7_0", paths=paths), ["loss=bce"], "CANCELLED")
    assert ret.status == JobStatus.FAILED
    with pytest.raises(RuntimeError, match="SLURM job 7_0 ended CANCELLED without a result"):
        _ = ret.return_value
