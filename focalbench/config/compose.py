"""Composition: Hydra composes conf/ with the overrides, and this module turns the result into a
RunConfig once (`compose`, `from_dictconfig`, `from_container`), naming an unknown option or group
choice with the valid ones; also reads run folders of the first schema, and writes config.yaml.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from focalbench.config.groups import CONFIG_MODULE, GROUPS, group_options
from focalbench.config.models import MODEL_CFGS, ModelCfg
from focalbench.config.schema import (
    DataCfg,
    LossCfg,
    MatcherCfg,
    PruneCfg,
    RunConfig,
    TrainCfg,
    WandbCfg,
)
from focalbench.errors import InputError


def _build(cls: type, section: Any, option: str) -> Any:
    """Build one frozen dataclass from a plain dict, naming unknown keys and the valid ones."""
    if section is None:
        return cls()
    if not isinstance(section, dict):
        raise InputError(f"{option} must be a mapping, got {section!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(section) - names)
    if unknown:
        prefix, _, which = option.partition(" ")  # "model (model=detr)": name the model too
        where = f" for {which.strip('()')}" if which else ""
        raise InputError(
            f"unknown option {prefix}.{unknown[0]}; valid {prefix} options{where}: {sorted(names)}"
        )
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()}
    return cls(**values)


def _build_model(section: Any) -> ModelCfg:
    """The dataclass of the model section's name (MODEL_CFGS), built from the section."""
    name = section.get("name", "retinanet") if isinstance(section, dict) else "retinanet"
    if name not in MODEL_CFGS:
        raise InputError(f"unknown model {name!r}; choose from {sorted(MODEL_CFGS)}")
    if isinstance(section, dict) and "weights_path" in section:
        section = _from_first_schema(section, MODEL_CFGS[name])
    return _build(MODEL_CFGS[name], section, f"model (model={name})")


def _from_first_schema(section: dict[str, Any], cls: type[ModelCfg]) -> dict[str, Any]:
    """A model section of the first schema (a config.yaml written before RetinaNetCfg/DetrCfg; its
    weights_path key marks it) in today's terms: weights_path becomes weights, with the BatchNorm
    and the stages that schema always trained, and the other model's fields, which changed
    nothing, are dropped."""
    own = {f.name for f in dataclasses.fields(cls)}
    today = {k: v for k, v in section.items() if k in own}
    return {**today, "weights": section["weights_path"], "norm": "bn", "trainable_layers": 5}


def _data_section(section: Any) -> Any:
    """A data section written before data.difficulty existed (a run folder's config.yaml) meant the
    images now called hard: without the key it reads as hard, not as today's default."""
    if isinstance(section, dict) and "difficulty" not in section:
        return {**section, "difficulty": "hard"}
    return section


def from_container(cfg: dict[str, Any]) -> RunConfig:
    """RunConfig from the resolved container of a composed Hydra config."""
    cfg = {k: v for k, v in cfg.items() if k != "hydra"}
    top = {"seed", "results_dir", "sweep_id", "job_name"}
    known = top | {"model", "loss", "matcher", "data", "train", "logger", "prune"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise InputError(f"unknown option {unknown[0]!r}; valid top-level options: {sorted(known)}")
    logger = cfg.get("logger") or {}
    seed = cfg.get("seed", 0)
    if not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed={seed!r} must be a non-negative integer")
    return RunConfig(
        model=_build_model(cfg.get("model")),
        loss=_build(LossCfg, cfg.get("loss"), "loss"),
        matcher=_build(MatcherCfg, cfg.get("matcher"), "matcher"),
        data=_build(DataCfg, _data_section(cfg.get("data")), "data"),
        train=_build(TrainCfg, cfg.get("train"), "train"),
        wandb=_build(WandbCfg, logger.get("wandb"), "logger.wandb"),
        prune=_build(PruneCfg, cfg.get("prune"), "prune"),
        seed=seed,
        results_dir=str(cfg.get("results_dir") or "results"),
        sweep_id=_name(cfg.get("sweep_id"), "sweep_id"),
        job_name=_name(cfg.get("job_name"), "job_name"),
    )


def _name(value: Any, option: str) -> str | None:
    """A folder name from the command line; Hydra reads `job_name=12e3` as a number if unquoted."""
    if value is None or isinstance(value, str):
        return value
    raise InputError(f"{option}={value!r} was read as a number; quote it: {option}='...'")


def from_dictconfig(cfg: Any) -> RunConfig:
    """RunConfig from Hydra's DictConfig (the `@hydra.main` entry point)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        raise InputError(_explain(exc)) from exc
    return from_container(container)


def check_group_overrides(overrides: list[str]) -> None:
    """`loss=foo` with no conf/loss/foo.yaml: say so with the choices, before Hydra's longer
    message."""
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if not sep or key not in GROUPS or value in ("", "null"):
            continue
        choices = group_options(key)
        for name in value.split(","):  # multirun lists: loss=focal,bce
            if name.strip() not in choices:
                raise InputError(f"unknown {key} {name.strip()!r}; choose from {choices}")


def compose_dict(overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Compose conf/config.yaml with Hydra overrides; returns the DictConfig."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides)
    check_group_overrides(overrides)
    errors = (HydraException, OmegaConfBaseException)
    GlobalHydra.instance().clear()
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        try:
            return compose("config", overrides=overrides)
        except errors as exc:
            error = exc
        # `model.d_model=64` with model=retinanet, `loss.gamma=1` with loss=qfl: the valid options
        # are the keys of the group option chosen, which the composition without the failing
        # override tells
        key = _unknown_key(error)
        rest = [o for o in overrides if o.lstrip("+~").partition("=")[0] != key]
        try:
            section = compose("config", overrides=rest).get(key.partition(".")[0]) if key else None
        except errors:
            section = None
    if not hasattr(section, "keys") or "." not in key:
        raise InputError(_explain(error)) from error
    group = key.partition(".")[0]
    chosen = f" for {group}={section['name']}" if "name" in section else ""
    raise InputError(
        f"unknown option {key}; valid {group} options{chosen}: {sorted(section.keys())}"
    ) from error


def _unknown_key(exc: BaseException) -> str:
    """The key of Hydra's "Could not override 'KEY'", or ""."""
    line = _first_line(exc)
    return line.split("'")[1] if line.startswith("Could not override '") else ""


_SECTIONS = {
    "loss": LossCfg,
    "matcher": MatcherCfg,
    "data": DataCfg,
    "train": TrainCfg,
    "prune": PruneCfg,
}


def _explain(exc: BaseException) -> str:
    """One line for a Hydra/OmegaConf error, naming the option and, where known, the valid ones."""
    line = _first_line(exc)
    key = _unknown_key(exc)
    if key:
        section, _, name = key.partition(".")
        if section == "model":  # of any model (compose_dict names the chosen model's where it can)
            valid = sorted({f.name for cls in MODEL_CFGS.values() for f in dataclasses.fields(cls)})
            return f"unknown option {key}; valid model options: {valid}"
        if section in _SECTIONS:
            valid = sorted(f.name for f in dataclasses.fields(_SECTIONS[section]))
            return f"unknown option {key}; valid {section} options: {valid}"
        return f"unknown option {key!r}; add it with +{key}=... only if you mean to"
    full_key = getattr(exc, "full_key", None)
    if full_key and "Missing mandatory value" in line:
        return f"missing value for {full_key}: pass {full_key}=..."
    return line


def compose(overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """RunConfig for `focalbench train OVERRIDES...`."""
    return from_dictconfig(compose_dict(overrides))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def to_yaml(cfg: RunConfig) -> str:
    """The run's full config as YAML (written to the run folder as config.yaml)."""
    import yaml

    data = dataclasses.asdict(cfg)
    data["run_id"] = cfg.run_id
    return yaml.safe_dump(json.loads(json.dumps(data, default=list)), sort_keys=False)
