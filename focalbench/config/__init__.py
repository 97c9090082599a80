"""Typed run configuration: Hydra composes conf/, this package turns the result into frozen
dataclasses once. Code below the entry points sees only `RunConfig`.

Which file owns what:
- groups.py    the conf/ tree (CONFIG_MODULE, group_options, search_grid); range/choice checks
- models.py    ModelCfg, RetinaNetCfg, DetrCfg, MODEL_CFGS, weights_kind
- schema.py    LossCfg, MatcherCfg, DataCfg, TrainCfg, WandbCfg, PruneCfg and RunConfig
- identity.py  run id, config id, and the first schema's ids (legacy)
- resolve.py   words that stand for data-dependent values (loss.alpha=inverse_freq)
- compose.py   Hydra -> RunConfig (compose, from_dictconfig, from_container), config.yaml

Imports go down that list (compose -> schema -> {identity, models, resolve} -> groups); none imports
torch or another part of focalbench but errors and the torch-free loss table
(focalbench.losses.params), so the CLI can validate a config without paying for torch.
"""

from focalbench.config.compose import (
    check_group_overrides,
    compose,
    compose_dict,
    from_container,
    from_dictconfig,
    to_yaml,
)
from focalbench.config.groups import (
    CONFIG_MODULE,
    GROUPS,
    check_choice,
    check_range,
    group_options,
    override_value,
    search_grid,
)
from focalbench.config.identity import config_id, run_id
from focalbench.config.models import (
    MODEL_CFGS,
    NORMS,
    DetrCfg,
    ModelCfg,
    RetinaNetCfg,
    weights_kind,
)
from focalbench.config.resolve import (
    ALPHA_WORDS,
    INVERSE_FREQ_MEAN,
    PER_CLASS_ALPHA_LOSSES,
    inverse_freq_alpha,
)
from focalbench.config.schema import (
    COMPILE_BACKENDS,
    DIFFICULTIES,
    EXECUTION_OPTIONS,
    LOSS_PARAMS,
    PRUNERS,
    DataCfg,
    LossCfg,
    MatcherCfg,
    PruneCfg,
    RunConfig,
    TrainCfg,
    WandbCfg,
)

__all__ = [
    "ALPHA_WORDS",
    "COMPILE_BACKENDS",
    "CONFIG_MODULE",
    "DIFFICULTIES",
    "EXECUTION_OPTIONS",
    "GROUPS",
    "INVERSE_FREQ_MEAN",
    "LOSS_PARAMS",
    "MODEL_CFGS",
    "NORMS",
    "PER_CLASS_ALPHA_LOSSES",
    "PRUNERS",
    "DataCfg",
    "DetrCfg",
    "LossCfg",
    "MatcherCfg",
    "ModelCfg",
    "PruneCfg",
    "RetinaNetCfg",
    "RunConfig",
    "TrainCfg",
    "WandbCfg",
    "check_choice",
    "check_group_overrides",
    "check_range",
    "compose",
    "compose_dict",
    "config_id",
    "from_container",
    "from_dictconfig",
    "group_options",
    "inverse_freq_alpha",
    "override_value",
    "run_id",
    "search_grid",
    "to_yaml",
    "weights_kind",
]
