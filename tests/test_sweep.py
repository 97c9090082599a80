"""Sweep planning, the pool's scheduling (with fake processes and a fake GPU list), and an
end-to-end sweep."""

import csv
import threading

import pytest

from focalbench.config import group_options
from focalbench.errors import InputError
from focalbench.sweep.local import check_gpus, run_pool, slot_envs
from focalbench.sweep.plan import default_sweep_id, expand_grid, make_plan


def test_grid_expands_like_hydra_multirun():
    grid = expand_grid(["loss=focal,qfl", "loss.gamma=0,0.5,1,2", "seed=range(0,3)"])
    assert len(grid) == 2 * 4 * 3
    assert ["loss=focal", "loss.gamma=0", "seed=0"] in grid


def test_a_ready_made_grid_expands_to_its_runs():
    jobs = expand_grid(["hparams_search=focal_alpha_gamma"])
    assert all(job[0] == "loss=focal" for job in jobs)
    pairs = {(job[1], job[2]) for job in jobs}
    alphas = ["loss.alpha=0.25", "loss.alpha=0.5", "loss.alpha=0.75", "loss.alpha=null"]
    gammas = [f"loss.gamma={g}" for g in ("0", "0.5", "1", "2", "5")]
    assert len(jobs) == 20 and pairs == {(a, g) for a in alphas for g in gammas}
    # the user's own override of a grid key replaces that grid line; other overrides multiply
    jobs = expand_grid(["hparams_search=focal_alpha_gamma", "loss.gamma=2", "seed=0,1"])
    assert len(jobs) == 4 * 2 and {job[2] for job in jobs} == {"loss.gamma=2"}


def test_hydra_multirun_reads_the_same_grid():
    from hydra import compose, initialize_config_module

    from focalbench.config import CONFIG_MODULE, search_grid

    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        cfg = compose("config", ["hparams_search=losses"], return_hydra_config=True)
    params = {k: str(v) for k, v in cfg.hydra.sweeper.params.items()}
    assert [f"{k}={v}" for k, v in params.items()] == search_grid("losses")
    assert params == {"loss": "bce,focal,softmax_focal,ce,qfl,vfl"}


def test_every_ready_made_grid_plans_distinct_runs():
    sizes = {"focal_alpha_gamma": 20, "losses": 6, "detr_matchers": 4}
    assert sorted(sizes) == group_options("hparams_search")
    for name, size in sizes.items():
        smoke = "experiment=detr_smoke" if name.startswith("detr") else "experiment=smoke"
        plan = make_plan([f"hparams_search={name}", smoke])
        assert len({job.run_id for job in plan.jobs}) == size, name


def test_unknown_ready_made_grid():
    with pytest.raises(InputError, match=r"unknown hparams_search 'nope'; choose from \['detr"):
        expand_grid(["hparams_search=nope"])


def test_plan_ids_and_states(tmp_path):
    from focalbench.results.store import append_row

    overrides = ["experiment=smoke", "loss=focal,bce", f"results_dir={tmp_path}"]
    plan = make_plan(overrides)
    assert plan.sweep_id == default_sweep_id(overrides) and len(plan.jobs) == 2
    assert all(j.state == "pending" for j in plan.jobs)
    ok, bad = plan.jobs
    append_row(tmp_path / "runs.csv", {"run_id": ok.run_id, "status": "ok"})
    append_row(tmp_path / "runs.csv", {"run_id": bad.run_id, "status": "diverged"})
    states = [j.state for j in make_plan(overrides).jobs]
    assert states == ["done", "failed"]
    assert [j.state for j in make_plan(overrides, retry_failed=True).jobs] == ["done", "pending"]
    assert [j.state for j in make_plan(overrides, force=True).jobs] == ["pending", "pending"]


def test_unsafe_sweep_id_rejected():
    with pytest.raises(InputError, match="sweep-id"):
        make_plan(["loss=focal"], sweep_id="../../etc")


def test_slot_envs_gpu_and_cpu():
    envs = slot_envs(gpus=[0, 3], jobs_per_gpu=2)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "0", "3", "3"]
    cpu = slot_envs(jobs=2, cpu_count=8)
    assert len(cpu) == 2 and all(
        e["OMP_NUM_THREADS"] == "4" and e["CUDA_VISIBLE_DEVICES"] == "" for e in cpu
    )


def test_check_gpus_with_a_fake_device_count():
    with pytest.raises(InputError, match="no CUDA GPU"):
        check_gpus([0], device_count=0)
    with pytest.raises(InputError, match=r"GPU 2 does not exist; choose from \[0, 1\]"):
        check_gpus([0, 2], device_count=2)
    check_gpus([0, 1], device_count=2)


class FakeProc:
    """A process that finishes after `ticks` polls with a given exit code."""

    def __init__(self, ticks, code):
        self.ticks, self.code = ticks, code

    def poll(self):
        self.ticks -= 1
        return self.code if self.ticks <= 0 else None


def test_pool_never_oversubscribes_a_gpu_and_runs_everything():
    envs = slot_envs(gpus=[0, 1], jobs_per_gpu=2)
    alive = {"0": 0, "1": 0}
    peak = {"0": 0, "1": 0}
    started, finished = [], []
    lock = threading.Lock()

    def launch(item, env):
        with lock:
            gpu = env["CUDA_VISIBLE_DEVICES"]
            alive[gpu] += 1
            peak[gpu] = max(peak[gpu], alive[gpu])
            started.append(item)
        return FakeProc(ticks=1 + item % 3, code=item % 2)

    def on_done(item, code, env):
        alive[env["CUDA_VISIBLE_DEVICES"]] -= 1
        finished.append((item, code))

    run_pool(list(range(10)), envs, launch, on_done, poll_s=0)
    assert sorted(started) == list(range(10)) and len(finished) == 10
    assert peak == {"0": 2, "1": 2}  # K jobs per GPU at most, and both GPUs were used
    assert dict(finished) == {i: i % 2 for i in range(10)}


@pytest.mark.slow
def test_sweep_end_to_end_resumes_without_duplicates(cli, tmp_path):
    args = [
        "sweep",
        "experiment=smoke",
        "loss=focal,bce",
        "seed=0,1",
        "data.train_images=8",
        "data.val_images=4",
        "--jobs",
        "2",
    ]
    first = cli(*args, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    with open(tmp_path / "results" / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    assert len({r["run_id"] for r in rows}) == 4 and all(
        r["sweep_id"].startswith("sweep-") for r in rows
    )

    again = cli(*args)
    assert again.returncode == 0 and "4 already done" in again.stdout and "0 to run" in again.stdout
    assert len((tmp_path / "results" / "runs.csv").read_text().splitlines()) == 5

    board = cli("leaderboard", "--format", "csv")
    assert board.returncode == 0, board.stderr
    lines = board.stdout.strip().splitlines()
    assert len(lines) == 3  # header + focal + bce, seeds aggregated
    board_rows = list(csv.DictReader(lines))
    assert "mAP_mean" in lines[0] and {r["n"] for r in board_rows} == {"2"}


def test_dry_run_runs_nothing(cli, tmp_path):
    result = cli("sweep", "experiment=smoke", "loss=focal,bce", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "2 jobs" in result.stdout and "pending" in result.stdout
    assert not (tmp_path / "results" / "runs.csv").exists()


def test_run_ids_that_look_like_numbers_stay_names():
    """A run id such as 681005e123 is a float to Hydra's parser: the sweep quotes it."""
    from focalbench.config import compose

    cfg = compose(["job_name='681005e123'", "sweep_id='12e3'"])
    assert cfg.job_name == "681005e123" and cfg.sweep_id == "12e3"
    with pytest.raises(InputError, match="quote it"):
        compose(["job_name=681005e123"])


def test_the_live_view_counts_jobs_by_state():
    """The same view for the local pool and SLURM: pending (with SLURM's reasons), running, done,
    failed; a line per event."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from focalbench.sweep.report import JobsProgress

    out = io.StringIO()
    jobs = [SimpleNamespace(run_id=r) for r in "abcde"]
    with JobsProgress(Console(file=out, width=200), jobs) as view:
        assert view.counts() == "5 pending · 0 running · 0 done · 0 failed"
        view.set("a", "pending", "Resources", line="pending a, Resources")
        view.set("b", "pending", "Priority")
        view.set("c", "running")
        view.set("d", "ok", line="ok d")
        view.set("e", "interrupted")
        assert view.counts() == "2 pending (Priority, Resources) · 1 running · 1 done · 1 failed"
        assert view.progress.tasks[0].completed == 2
    assert out.getvalue().splitlines()[:2] == ["pending a, Resources", "ok d"]
