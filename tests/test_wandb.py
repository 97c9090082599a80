"""W&B: offline without an API key (never a prompt), the science config only, no secrets
anywhere."""

import pytest


@pytest.mark.slow
def test_wandb_offline_run_without_key(cli, tmp_path):
    secret = "sk-focalbench-test-secret-0123456789"
    env = {
        "WANDB_MODE": None,
        "WANDB_API_KEY": None,
        "MY_SERVICE_TOKEN": secret,
        "HOME": str(tmp_path),
        "WANDB_DIR": None,
        "WANDB_CONFIG_DIR": str(tmp_path / ".config"),
    }
    result = cli(
        "train",
        "experiment=smoke",
        "data.train_images=8",
        "data.val_images=4",
        "logger=wandb",
        "train.progress=false",
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dirs = list((tmp_path / "results" / "runs").iterdir())
    assert len(run_dirs) == 1
    offline = list((run_dirs[0] / "wandb").glob("offline-run-*"))
    assert offline, "an offline W&B run folder should exist"
    files = [p for p in tmp_path.rglob("*") if p.is_file() and "data" not in p.parts]
    for path in files:
        assert secret.encode() not in path.read_bytes(), f"secret leaked into {path}"
    records = b"".join(p.read_bytes() for p in offline[0].rglob("*.wandb"))
    assert (
        b"laece0" in records and b"focal" in records
    )  # final metrics and the science config were logged
