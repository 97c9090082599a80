"""SLURM: reading sinfo and squeue, requests that fit, the watch loop (with fakes, in `make test`);
then sweeps on a real one-node cluster (marked `slurm`: `make test-slurm` starts one with
scripts/slurm_local.sh, and they are skipped, with the reason, where no cluster answers)."""

import csv
import logging
import shutil
import signal
import subprocess
import sys
import time

import pytest

from focalbench.errors import InputError
from focalbench.sweep.slurm import jobs as slurm_jobs
from focalbench.sweep.slurm import request as slurm
from tests.conftest import TINY

SINFO = """\
cpu*|64|256000|(null)|1-00:00:00|10|up
gpu|32|512000|gpu:a100:4(S:0-1)|2:00:00|4|up
gpu|16|128000|gpu:2,mps:200|2:00:00|2|up
tiny|2+|2000|(null)|30:00|1|down
"""


# ---- sinfo and requests --------------------------------------------------------------------------
def test_partitions_from_sinfo():
    parts = slurm.read_partitions(SINFO)
    assert sorted(parts) == ["cpu", "gpu", "tiny"] and parts["cpu"].default
    gpu = parts["gpu"]  # two node groups: the most one node has, and all the nodes
    assert (gpu.cpus, gpu.mem_mb, gpu.gpus, gpu.nodes) == (32, 512000, 4, 6)
    assert gpu.time_limit_min == 120 and parts["cpu"].time_limit_min == 1440
    assert (parts["tiny"].cpus, parts["tiny"].time_limit_min, parts["tiny"].state) == (
        2,
        30,
        "down",
    )


@pytest.mark.parametrize(
    "text, minutes",
    [("infinite", None), ("UNLIMITED", None), ("45", 45), ("30:00", 30), ("2:00:00", 120),
     ("1-12", 2160), ("1-00:30:00", 1470), ("0:00:30", 0.5)],
)  # fmt: skip
def test_slurm_time_format(text, minutes):
    assert slurm.parse_time_min(text) == minutes


def test_gpus_default_to_what_the_partition_has():
    parts = slurm.read_partitions(SINFO)
    params, part = slurm.fit_request({"gpus_per_node": None}, parts)
    assert part.name == "cpu" and params["gpus_per_node"] == 0 and params["partition"] == "cpu"
    params, _ = slurm.fit_request({"partition": "gpu", "gpus_per_node": None}, parts)
    assert params["gpus_per_node"] == 1


@pytest.mark.parametrize(
    "request_, message",
    [
        ({"cpus_per_task": 64, "partition": "gpu"},
         "hydra.launcher.cpus_per_task=64 asks for 64 CPUs per node; the nodes of partition gpu "
         "have 32"),
        ({"mem_gb": 600, "partition": "gpu"}, "hydra.launcher.mem_gb=600 asks for 600 GB per "
         "node; the nodes of partition gpu have 500.0 GB"),
        ({"gpus_per_node": 1}, "hydra.launcher.gpus_per_node=1 asks for 1 GPU(s) per node; the "
         "nodes of partition cpu have no GPUs"),
        ({"gpus_per_node": 8, "partition": "gpu"}, "the nodes of partition gpu have 4"),
        ({"timeout_min": 180, "partition": "gpu"}, "hydra.launcher.timeout_min=180 asks for 180 "
         "min; partition gpu allows at most 120 min"),
        ({"nodes": 11}, "hydra.launcher.nodes=11 asks for 11 nodes; partition cpu has 10"),
        ({"tasks_per_node": 40, "cpus_per_task": 2}, "hydra.launcher.tasks_per_node=40"),
        ({"partition": "big"}, "hydra.launcher.partition='big': no such partition; choose from "
         "['cpu', 'gpu', 'tiny']"),
        ({"cpus_per_task": 1.5}, "hydra.launcher.cpus_per_task=1.5: expected a whole number"),
    ],
)  # fmt: skip
def test_a_request_that_can_never_start_is_refused(request_, message):
    with pytest.raises(InputError) as info:
        slurm.fit_request(request_, slurm.read_partitions(SINFO))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_no_default_partition():
    parts = slurm.read_partitions(SINFO.replace("cpu*", "cpu"))
    with pytest.raises(InputError, match=r"partition=null .* choose from \['cpu', 'gpu', 'tiny'\]"):
        slurm.fit_request({}, parts)


def test_the_shipped_defaults_fit_a_two_cpu_node_without_gpus():
    """The README's command with no launcher overrides must run on scripts/slurm_local.sh's node."""
    params = slurm.launcher_params()
    node = slurm.read_partitions("debug*|2|3000|(null)|infinite|1|up")
    fitted, _ = slurm.fit_request(params, node)
    assert fitted["gpus_per_node"] == 0 and fitted["cpus_per_task"] <= 2 and fitted["mem_gb"] == 1


def test_launcher_overrides_are_checked_by_name():
    params = slurm.launcher_params(["hydra.launcher.cpus_per_task=2", "hydra.launcher.qos=high"])
    assert params["cpus_per_task"] == 2 and params["qos"] == "high"
    with pytest.raises(InputError, match=r"hydra.launcher.cpu=2: no such launcher field; choose"):
        slurm.launcher_params(["hydra.launcher.cpu=2"])
    with pytest.raises(InputError, match="could not be converted to Integer"):
        slurm.launcher_params(["hydra.launcher.cpus_per_task=many"])


def test_executor_parameters(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    # submitit refuses to build a SLURM executor where `srun` is not on the PATH; the parameter
    # mapping under test does not need one (without this the test passed only on machines where
    # `make test-slurm` had installed SLURM before)
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    params, _ = slurm.fit_request(slurm.launcher_params(), slurm.read_partitions(SINFO))
    executor = slurm.make_executor(tmp_path / "%j", params)
    p = executor._executor.parameters
    # 1 CPU of a 64-CPU node with 250 GB: a 3 GB share
    assert (p["cpus_per_task"], p["mem"], p["time"], p["partition"]) == (1, "3GB", 60, "cpu")
    assert "gpus_per_node" not in p  # 0 GPUs: no --gpus-per-node line at all


# ---- squeue and the watch loop -------------------------------------------------------------------
def test_squeue_output_and_a_controller_that_does_not_answer(monkeypatch):
    def fake_run(cmd, **kwargs):
        assert cmd[-1] == "12,13" and "--states=all" in cmd and "-r" in cmd
        out = "12_0|RUNNING|None\n12_1|PENDING|Resources\n13|CANCELLED|None\n"
        return subprocess.CompletedProcess(cmd, 0, out, "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    states = slurm_jobs.squeue_states(["12_0", "12_1", "13"])
    assert states == {"12_0": ("RUNNING", ""), "12_1": ("PENDING", "Resources"),
                      "13": ("CANCELLED", "")}  # fmt: skip

    def gone(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "slurm_load_jobs error: Invalid job id")

    monkeypatch.setattr(subprocess, "run", gone)
    assert slurm_jobs.squeue_states(["12_0"]) == {}  # all ended long ago
    monkeypatch.setattr(
        subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "refused")
    )
    assert slurm_jobs.squeue_states(["12_0"]) is None


class FakeCluster:
    """squeue answers from a script: one dict (or None: no answer) per poll; time moves 60 s."""

    def __init__(self, polls):
        self.polls, self.now = list(polls), 0.0

    def poll(self, job_ids):
        return self.polls.pop(0) if len(self.polls) > 1 else self.polls[0]

    def sleep(self, seconds):
        self.now += 60

    def clock(self):
        return self.now


def test_watch_reports_each_change_and_warns_about_long_pending():
    cluster = FakeCluster(
        [
            {"1_0": ("PENDING", ""), "1_1": ("PENDING", "Priority")},
            None,  # the controller restarts: one warning, states kept
            None,
            {"1_0": ("RUNNING", ""), "1_1": ("PENDING", "Priority")},
            {"1_0": ("COMPLETED", ""), "1_1": ("PENDING", "Priority")},
            {"1_0": ("COMPLETED", ""), "1_1": ("CANCELLED", "")},
        ]
    )
    changes, warnings = [], []
    ends = slurm_jobs.watch(
        ["1_0", "1_1"],
        lambda *change: changes.append(change),
        warnings.append,
        pending_warn_s=150,
        poll=cluster.poll,
        sleep=cluster.sleep,
        clock=cluster.clock,
    )
    assert ends == {"1_0": "COMPLETED", "1_1": "CANCELLED"}
    assert changes == [("1_0", "PENDING", ""), ("1_1", "PENDING", "Priority"),
                       ("1_0", "RUNNING", ""), ("1_0", "COMPLETED", ""),
                       ("1_1", "CANCELLED", "")]  # fmt: skip
    assert warnings[0] == "squeue does not answer; still waiting for the jobs"
    assert (
        len(warnings) == 2
        and "job 1_1 has been pending for 3 min (reason: Priority)" in (warnings[1])
    )


def test_a_job_that_left_squeue_unseen_is_gone():
    cluster = FakeCluster([{"1": ("RUNNING", "")}, {}, {}])
    changes = []
    ends = slurm_jobs.watch(["1"], lambda *c: changes.append(c), print, poll=cluster.poll,
                            sleep=cluster.sleep, clock=cluster.clock)  # fmt: skip
    assert ends == {"1": "GONE"} and changes[-1] == ("1", "GONE", "")
    assert "GONE" in slurm_jobs.STOPPED_ENDS  # its run resumes next time


def test_repeated_sacct_warnings_become_one_line(caplog):
    log = logging.getLogger("submitit")
    with caplog.at_level(logging.WARNING, logger="submitit"), slurm_jobs.quiet_submitit():
        for call in range(3):
            log.warning(f"Call #{call} - Bypassing sacct error Command 'sacct' returned 1.")
        log.warning("something else")
    assert [r.getMessage() for r in caplog.records] == [
        "sacct does not work here (no accounting); repeats hidden",
        "something else",
    ]


def test_an_ended_job_gets_a_row_only_when_it_wrote_none(tmp_path):
    from focalbench.results.store import append_row, latest_rows, read_rows
    from focalbench.sweep.plan import make_plan
    from focalbench.sweep.slurm.run import settle

    plan = make_plan([*TINY, "loss=focal,bce,qfl", f"results_dir={tmp_path}"])
    focal, bce, qfl = plan.jobs
    log = tmp_path / "log.out"
    log.write_text("Traceback ...\nRuntimeError: CUDA error: out of memory\n")
    append_row(tmp_path / "runs.csv", {"run_id": focal.run_id, "status": "interrupted"})
    assert settle(focal, "5_0", "CANCELLED", 0, log) == "interrupted"  # its own row: kept
    assert settle(bce, "5_1", "CANCELLED", 0, tmp_path / "none") == "interrupted"  # never started
    assert settle(qfl, "5_2", "FAILED", 0, log) == "failed"
    rows = read_rows(tmp_path / "runs.csv")
    latest = latest_rows(rows)
    assert len(rows) == 3 and latest[bce.run_id]["error"] == "SLURM job 5_1 ended CANCELLED"
    assert latest[qfl.run_id]["error"] == (
        "SLURM job 5_2 ended FAILED: RuntimeError: CUDA error: out of memory"
    )


def test_launcher_settings_stay_out_of_the_sweep_id_and_the_local_pool(cli):
    from focalbench.sweep.plan import default_sweep_id, split_launcher_overrides

    runs, launcher = split_launcher_overrides(["loss=focal,bce", "hydra.launcher.cpus_per_task=4"])
    assert runs == ["loss=focal,bce"] and launcher == ["hydra.launcher.cpus_per_task=4"]
    assert default_sweep_id(runs) == default_sweep_id(["loss=focal,bce"])
    result = cli("sweep", "loss=focal", "hydra.launcher.cpus_per_task=4")
    assert result.returncode == 2
    assert "hydra.launcher.cpus_per_task=4 sets a cluster launcher" in result.stderr


# ---- a real one-node cluster ---------------------------------------------------------------------
def _cluster_or_skip_reason() -> str:
    if shutil.which("sbatch") is None:
        return "sbatch not found (scripts/slurm_local.sh start installs slurm-wlm as root)"
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        return "sinfo does not answer (start a cluster: scripts/slurm_local.sh start)"
    if out.returncode != 0 or not out.stdout.strip():
        return "no SLURM controller answers sinfo (start one: scripts/slurm_local.sh start)"
    return ""


@pytest.fixture(scope="module")
def cluster():
    reason = _cluster_or_skip_reason()
    if reason:
        pytest.skip(reason)


def _rows(tmp_path):
    with open(tmp_path / "results" / "runs.csv") as f:
        return list(csv.DictReader(f))


def _our_jobs() -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i", "-n", "focalbench"], capture_output=True,
                         text=True)  # fmt: skip
    return out.stdout.split()


@pytest.mark.slurm
def test_readme_command_runs_to_ok_rows_and_a_rerun_submits_nothing(cluster, cli, tmp_path):
    # the README's command, no launcher overrides, on the tiny test data
    args = ["sweep", "loss=focal,bce", "--launcher", "submitit_slurm", *TINY]
    first = cli(*args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "submitted 2 job(s) as SLURM job" in first.stdout and "results" in first.stdout
    assert "Bypassing sacct" not in first.stdout + first.stderr
    rows = _rows(tmp_path)
    assert sorted(r["loss"] for r in rows) == ["bce", "focal"]
    assert {r["status"] for r in rows} == {"ok"}
    again = cli(*args)
    assert again.returncode == 0 and "2 already done" in again.stdout and "0 to run" in again.stdout
    assert "submitted" not in again.stdout and len(_rows(tmp_path)) == 2
    # execution settings are no part of the sweep id: the same sweep, nothing to run
    other = cli(*args, "hydra.launcher.timeout_min=30")
    assert other.returncode == 0 and "0 to run" in other.stdout


LONG = ["sweep", "loss=focal", "train.epochs=20", "--launcher", "submitit_slurm", *TINY]


def _sweep_mid_run(tmp_path, stop) -> tuple[int, str]:
    """Start the LONG sweep, wait until its job has checkpointed an epoch, call stop(sweep), and
    return the sweep's exit code and output."""
    import os

    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "focalbench", *LONG]
    sweep = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 240
        while not list((tmp_path / "results" / "sweeps").glob("*/*/checkpoint.pt")):
            assert sweep.poll() is None and time.monotonic() < deadline, sweep.stdout.read()
            time.sleep(0.1)
        stop(sweep)
        output, _ = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    return sweep.returncode, output


@pytest.mark.slurm
def test_a_job_cancelled_mid_run_is_interrupted_and_the_rerun_finishes_it(cluster, cli, tmp_path):
    def scancel(sweep):
        jobs = _our_jobs()
        assert len(jobs) == 1
        subprocess.run(["scancel", *jobs], check=True)

    code, output = _sweep_mid_run(tmp_path, scancel)
    assert code == 1, output[-3000:]
    assert "interrupted" in output and "SLURM CANCELLED" in output
    (row,) = _rows(tmp_path)
    assert row["status"] == "interrupted"
    again = cli(*LONG)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "1 to run" in again.stdout
    assert [r["status"] for r in _rows(tmp_path)] == ["interrupted", "ok"]
    log = next((tmp_path / "results" / "sweeps").glob("*/*/train_log.csv")).read_text()
    assert len(log.strip().splitlines()) == 1 + 20  # every epoch once: resumed, not restarted


@pytest.mark.slurm
def test_stopping_the_sweep_cancels_its_jobs(cluster, tmp_path):
    """`kill SWEEP_PID` (or Ctrl-C) as with the local pool: the jobs stop and are `interrupted`."""
    code, output = _sweep_mid_run(tmp_path, lambda sweep: sweep.send_signal(signal.SIGTERM))
    assert code == 130, output[-3000:]
    assert "interrupted: cancelling SLURM jobs" in output
    assert [r["status"] for r in _rows(tmp_path)] == ["interrupted"] and _our_jobs() == []


@pytest.mark.slurm
def test_an_impossible_request_exits_2_at_once(cluster, cli, tmp_path):
    start = time.monotonic()
    result = cli("sweep", "loss=focal,bce", "--launcher", "submitit_slurm", *TINY,
                 "hydra.launcher.cpus_per_task=64")  # fmt: skip
    assert result.returncode == 2 and time.monotonic() - start < 60
    (line,) = result.stderr.strip().splitlines()
    assert "hydra.launcher.cpus_per_task=64 asks for 64 CPUs per node" in line
    assert "the nodes of partition " in line and " have " in line
    assert not (tmp_path / "results" / "sweeps").exists() and _our_jobs() == []
    # what only sbatch can check (a node feature, an account) is refused in one line too
    result = cli("sweep", "loss=focal", "--launcher", "submitit_slurm", *TINY,
                 "hydra.launcher.constraint=no_such_feature")  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: sbatch refused the jobs: sbatch: error: Batch job submission failed: "
        "Invalid feature specification"
    )


@pytest.mark.slurm
def test_hydra_multirun_through_the_slurm_launcher(cluster, tmp_path):
    import os

    env = {**os.environ, "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "focalbench.train", "-m", "loss=focal,bce", *TINY,
           "hydra/launcher=submitit_slurm"]  # fmt: skip
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "[submitit_slurm] partition " in result.stdout
    assert sorted(r["status"] for r in _rows(tmp_path)) == ["ok", "ok"]
