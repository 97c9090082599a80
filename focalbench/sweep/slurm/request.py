"""SLURM requests, for `focalbench sweep --launcher submitit_slurm` and for the
`hydra/launcher=submitit_slurm` launcher: what the partition offers (sinfo), a request that fits
it or a one-line error (slurm_request), and submitit's executor for it. Following jobs: jobs.py.

A request larger than every node would pend forever (reason PartitionConfig), and a GPU request on
a partition without GPUs fails at sbatch: both are refused here, before anything is submitted.
"""

from __future__ import annotations

import os
import re
import subprocess
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from focalbench.errors import InputError
from focalbench.sweep.slurm.jobs import PENDING_WARN_MIN

LAUNCHER = "submitit_slurm"
# keys of a request that are no submitit parameters: the yaml's Hydra-only ones, and the pending
# warning time that `focalbench sweep --pending-warn-min` adds
OWN_KEYS = ("_target_", "submitit_folder", "pending_warn_min")
# submitit's executor-independent parameter names; every other one takes the `slurm_` prefix
_BASE_KEYS = {"timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "mem_gb"}
_BASE_KEYS |= {"nodes", "name", "stderr_to_stdout"}


# ---- the partition and the request --------------------------------------------------------------
@dataclass(frozen=True)
class Partition:
    name: str
    cpus: int  # the most CPUs one node has
    mem_mb: int  # the most memory one node has
    gpus: int  # the most GPUs one node has
    nodes: int
    time_limit_min: float | None  # None: no limit
    default: bool = False
    state: str = "up"

    def describe(self) -> str:
        limit = "no time limit" if self.time_limit_min is None else f"{self.time_limit_min:g} min"
        gpus = f"{self.gpus} GPUs" if self.gpus else "no GPUs"
        return (
            f"partition {self.name} ({self.state}): {self.nodes} node(s) of up to {self.cpus} "
            f"CPUs, {self.mem_mb / 1024:.1f} GB, {gpus}; {limit}"
        )


_SINFO_FORMAT = "%P|%c|%m|%G|%l|%D|%a"


def read_partitions(text: str | None = None) -> dict[str, Partition]:
    """The cluster's partitions from `sinfo` (or from its output, given as text). sinfo prints one
    line per group of alike nodes: a partition offers the most that one of its nodes has."""
    if text is None:
        text = _sinfo()
    rows: dict[str, list[list[str]]] = {}
    for line in text.splitlines():
        cells = line.strip().split("|")
        if len(cells) == 7:
            rows.setdefault(cells[0], []).append(cells)
    partitions = {}
    for raw_name, cells in rows.items():
        name = raw_name.rstrip("*")  # sinfo marks the default partition with a star
        partitions[name] = Partition(
            name=name,
            cpus=max(_leading_int(c[1]) for c in cells),
            mem_mb=max(_leading_int(c[2]) for c in cells),
            gpus=max(gres_gpus(c[3]) for c in cells),
            nodes=sum(_leading_int(c[5]) for c in cells),
            time_limit_min=parse_time_min(cells[0][4]),
            default=raw_name.endswith("*"),
            state=cells[0][6],
        )
    return partitions


def _sinfo() -> str:
    hint = "run on a SLURM login node, or start a one-node cluster: scripts/slurm_local.sh start"
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", _SINFO_FORMAT], capture_output=True, text=True, timeout=60
        )
    except FileNotFoundError:
        raise InputError(f"--launcher {LAUNCHER}: sinfo not found; {hint}") from None
    except subprocess.TimeoutExpired:
        raise InputError(f"--launcher {LAUNCHER}: sinfo did not answer in 60 s; {hint}") from None
    if out.returncode != 0 or not out.stdout.strip():
        first = (out.stderr.strip().splitlines() or ["no partitions"])[0]
        raise InputError(f"--launcher {LAUNCHER}: sinfo failed ({first}); {hint}")
    return out.stdout


def _leading_int(text: str) -> int:
    match = re.match(r"\d+", text.strip())  # "2+" on partitions of mixed nodes
    return int(match.group()) if match else 0


def gres_gpus(gres: str) -> int:
    """GPUs per node in sinfo's GRES column: `gpu:4`, `gpu:a100:4(S:0-1)`, `(null)`..."""
    return sum(int(n) for n in re.findall(r"(?:^|,)gpu(?::[^:,(]+)?:(\d+)", gres.strip()))


def parse_time_min(text: str) -> float | None:
    """SLURM's time format (`infinite`, `30` min, `30:00` min:s, `2:00:00`, `1-12`, `1-00:00:00`)
    -> minutes; None for no limit."""
    text = text.strip().lower()
    if text in ("infinite", "unlimited", "", "n/a"):
        return None
    days, _, rest = text.rpartition("-")
    parts = [float(p) for p in rest.split(":")]
    if days:  # days-hours[:minutes[:seconds]]
        h, m, s = (parts + [0.0, 0.0])[:3]
        return float(days) * 1440 + h * 60 + m + s / 60
    if len(parts) == 3:
        return parts[0] * 60 + parts[1] + parts[2] / 60
    return parts[0] + (parts[1] / 60 if len(parts) == 2 else 0.0)


def _whole(params: dict[str, Any], key: str, default: int) -> int:
    value = params.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise InputError(f"hydra.launcher.{key}={value!r}: expected a whole number")
    return int(value)


def fit_request(
    params: dict[str, Any], partitions: dict[str, Partition]
) -> tuple[dict[str, Any], Partition]:
    """Resolve `gpus_per_node: null` (1 on a partition with GPUs, else 0) and `mem_gb: null` (the
    CPUs' share of a node's memory), and refuse a request that can never start on the partition (it
    would pend forever, reason PartitionConfig): one line naming the field, request and limit."""
    params = dict(params)
    name = params.get("partition")
    if name is None:
        name = next((p.name for p in partitions.values() if p.default), None)
        if name is None:
            raise InputError(
                f"hydra.launcher.partition=null and the cluster has no default partition; "
                f"choose from {sorted(partitions)}"
            )
    if name not in partitions:
        choices = sorted(partitions)
        raise InputError(
            f"hydra.launcher.partition={name!r}: no such partition; choose from {choices}"
        )
    part = partitions[name]
    if params.get("gpus_per_node") in (None, "auto"):
        params["gpus_per_node"] = 1 if part.gpus else 0
    if params.get("mem_gb") is None and not (
        params.get("mem_per_cpu") or params.get("mem_per_gpu")
    ):
        # the CPUs' share of a node's memory: without --mem some clusters give a job all of it
        share = part.mem_mb / 1024 * _whole(params, "cpus_per_task", 1) / max(1, part.cpus)
        params["mem_gb"] = max(1, int(share))
    nodes = _whole(params, "nodes", 1)
    cpus = _whole(params, "cpus_per_task", 1) * _whole(params, "tasks_per_node", 1)
    gpus = _whole(params, "gpus_per_node", 0)
    mem_gb = params.get("mem_gb")
    timeout = params.get("timeout_min")

    def refuse(key: str, asks: str, limit: str) -> InputError:
        return InputError(f"hydra.launcher.{key}={params[key]} asks for {asks}; {limit}")

    if nodes > part.nodes:
        raise refuse("nodes", f"{nodes} nodes", f"partition {name} has {part.nodes}")
    nodes_of = f"the nodes of partition {name}"
    if cpus > part.cpus:
        key = "cpus_per_task" if _whole(params, "tasks_per_node", 1) == 1 else "tasks_per_node"
        raise refuse(key, f"{cpus} CPUs per node", f"{nodes_of} have {part.cpus}")
    if gpus > part.gpus:
        have = f"have {part.gpus}" if part.gpus else "have no GPUs (gpus_per_node=null picks 0)"
        raise refuse("gpus_per_node", f"{gpus} GPU(s) per node", f"{nodes_of} {have}")
    if mem_gb is not None and float(mem_gb) * 1024 > part.mem_mb:
        limit = f"{nodes_of} have {part.mem_mb / 1024:.1f} GB"
        raise refuse("mem_gb", f"{mem_gb} GB per node", limit)
    if timeout is not None and part.time_limit_min is not None and timeout > part.time_limit_min:
        limit = f"partition {name} allows at most {part.time_limit_min:g} min"
        raise refuse("timeout_min", f"{timeout} min", limit)
    params["partition"] = name
    return params, part


def describe_request(params: dict[str, Any]) -> str:
    mem = f", {params['mem_gb']} GB" if params.get("mem_gb") is not None else ""
    return (
        f"each job asks for {_whole(params, 'cpus_per_task', 1)} CPU(s){mem}, "
        f"{params.get('gpus_per_node') or 0} GPU(s), {params.get('timeout_min')} min"
    )


def launcher_params(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """conf/hydra/launcher/submitit_slurm.yaml with the `hydra.launcher.*` overrides applied."""
    params = _compose_launcher([])
    for override in overrides:
        key = override.lstrip("+~").partition("=")[0].removeprefix("hydra.launcher.")
        if key.split(".")[0] not in params:
            fields = sorted(k for k in params if k not in OWN_KEYS)
            raise InputError(f"{override}: no such launcher field; choose from {fields}")
    return _compose_launcher(overrides) if overrides else params


def _compose_launcher(overrides: Sequence[str]) -> dict[str, Any]:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from focalbench.config import CONFIG_MODULE

    GlobalHydra.instance().clear()
    try:
        # Hydra validates the yaml against hydra-submitit-launcher's schema of the same name, and
        # warns each time that this matching is deprecated: the schema is welcome, the warning not
        with warnings.catch_warnings(), initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            warnings.simplefilter("ignore", UserWarning)
            cfg = compose(
                "config", [f"hydra/launcher={LAUNCHER}", *overrides], return_hydra_config=True
            )
    except (HydraException, OmegaConfBaseException) as exc:
        # "Error merging override hydra.launcher.cpus_per_task=x" and, from its cause, why
        lines, cause = [], exc
        while cause is not None and len(lines) < 2:
            lines.append(str(cause).strip().splitlines()[0])
            cause = cause.__cause__
        raise InputError(": ".join(lines)) from exc
    finally:
        GlobalHydra.instance().clear()
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=False)  # type: ignore[return-value]


def make_executor(folder: str | os.PathLike, params: dict[str, Any]):
    """submitit's SLURM executor for the fitted request (same parameter mapping as
    hydra-submitit-launcher, so one yaml serves both paths)."""
    import submitit

    params = {k: v for k, v in params.items() if k not in OWN_KEYS}
    max_num_timeout = params.pop("max_num_timeout", 0)
    if not params.get("gpus_per_node"):
        params["gpus_per_node"] = None  # 0 would still be written as --gpus-per-node=0
    executor = submitit.AutoExecutor(
        folder=folder, cluster="slurm", slurm_max_num_timeout=max_num_timeout
    )
    executor.update_parameters(
        **{k if k in _BASE_KEYS else f"slurm_{k}": v for k, v in params.items()}
    )
    return executor


def slurm_request(
    launcher_overrides: list[str],
    console,
    checked: bool = True,
    pending_warn_min: float = PENDING_WARN_MIN,
) -> dict[str, Any]:
    """The launcher yaml with the `hydra.launcher.*` overrides, fitted to the partition sinfo
    describes; InputError (exit 2) for a request that can never start. checked=False (a dry run)
    prints the request unchecked where there is no cluster to ask."""
    if not pending_warn_min > 0:
        raise InputError(f"--pending-warn-min={pending_warn_min}: must be more than 0 minutes")
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise InputError(
            "--launcher submitit_slurm needs submitit: pip install 'focalbench[slurm]'"
        ) from None
    params = launcher_params(launcher_overrides)
    params["pending_warn_min"] = pending_warn_min
    try:
        partitions = read_partitions()
    except InputError as exc:
        if checked:
            raise
        console.print(f"SLURM request not checked ({exc}): {describe_request(params)}")
        return params
    params, part = fit_request(params, partitions)
    console.print(f"SLURM {part.describe()}; {describe_request(params)}")
    return params
