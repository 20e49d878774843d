"""One training run: ``train_run(cfg, reporter)`` (CLI: ``python -m tti_ray.train``)."""

from tti_ray.train.checkpoint import CheckpointError, LoadedRun, load_model, save_checkpoint
from tti_ray.train.dist import DistInfo
from tti_ray.train.loop import StepStats, TrainSetupError, train_run
from tti_ray.train.reporter import Reporter

__all__ = [
    "CheckpointError",
    "DistInfo",
    "LoadedRun",
    "Reporter",
    "StepStats",
    "TrainSetupError",
    "load_model",
    "save_checkpoint",
    "train_run",
]
