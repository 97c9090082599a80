"""The conf/ tree as data, and the checks every config section runs.

Owns: where the Hydra configs live (CONFIG_MODULE), the choices of each group (group_options), the
grid lines of a ready-made hparams_search grid (search_grid), a YAML scalar written back as an
override (override_value), and the one-line range and choice checks of every `__post_init__`.
Imports no other part of focalbench.config.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from focalbench.errors import InputError

CONFIG_MODULE = "focalbench.conf"
GROUPS = ("model", "loss", "matcher", "data", "train", "logger", "experiment", "hparams_search")


def group_options(group: str) -> list[str]:
    """Names of the yaml files in conf/<group>/ — the choices a user can write as `group=name`."""
    folder = resources.files(CONFIG_MODULE) / group
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def check_choice(option: str, value: Any, choices: list[str] | tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"{option}={value!r} is not valid; choose from {sorted(choices)}")


def check_range(
    option: str, value: float, lo: float | None = None, hi: float | None = None
) -> None:
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        span = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise InputError(f"{option}={value!r} is out of range; expected a value in {span}")


def search_grid(name: str) -> list[str]:
    """The grid lines (`key=v1,v2`) of conf/hparams_search/NAME.yaml: its hydra.sweeper.params, the
    same ones Hydra's own multirun (`-m hparams_search=NAME`) reads."""
    import yaml

    choices = group_options("hparams_search")
    if name not in choices:
        raise InputError(f"unknown hparams_search {name!r}; choose from {choices}")
    text = (resources.files(CONFIG_MODULE) / "hparams_search" / f"{name}.yaml").read_text()
    params = yaml.safe_load(text)["hydra"]["sweeper"]["params"]
    return [f"{key}={override_value(value)}" for key, value in params.items()]


def override_value(value: Any) -> str:
    """A YAML scalar back in override syntax: null, true, 0.5, focal,bce."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
