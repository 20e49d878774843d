"""Typed, validated run configuration (see :mod:`tti_ray.config.schema`)."""

from tti_ray.config.load import ConfigError, load_config, parse_sets, read_yaml
from tti_ray.config.schema import SITES, DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig

__all__ = [
    "SITES",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "load_config",
    "parse_sets",
    "read_yaml",
]
