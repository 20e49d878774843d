"""Which metric names a trial of a given run config reports - so an objective that no trial
would ever report is an error at load time, not a sweep of silently dropped trials."""

from __future__ import annotations

import re

from tti_ray.config import RunConfig
from tti_ray.metrics import BASE_METRICS, CALIBRATED_METRICS, CATEGORY_METRICS

TRAIN = ("loss", "ce", "lr", "grad_norm", "tokens_per_s", "reg_to_ce_ratio")
TOY = (
    "loss", "hidden_l1", "objective", "features_represented", "superposition/mean",
    "dims_per_feature", "phase", r"norm/\d+", r"superposition/\d+", r"bias/\d+", "reg",
    "task_mse", "val_mse", "macs", "calibrated_macs", "interference", "feature_recovery", "l0",
    "sae_mse", "w4_sparsity", "w4_kurtosis", "dead_hidden",
)


def metric_patterns(cfg: RunConfig, sae: bool) -> list[str]:
    if cfg.workload != "lm":
        return [rf"toy/(?:{'|'.join(TOY)})"]
    sites = "|".join(cfg.eval.sites)
    layers = "|".join(str(i) for i in range(cfg.model.n_layer))
    ivs = "|".join(re.escape(n) for n in cfg.interventions) or "(?!)"
    from tti_ray.train.evaluate import category_kind

    metrics = list(BASE_METRICS)
    if cfg.eval.permutations > 0:
        metrics += CALIBRATED_METRICS
    if category_kind(cfg) is not None:
        metrics += CATEGORY_METRICS[: 2 if cfg.eval.permutations > 0 else 1]
    pats = [
        r"val/loss", r"val/perplexity", rf"train/(?:{'|'.join(TRAIN)})",
        rf"val/(?:{'|'.join(metrics)})/(?:mean|(?:{sites})/(?:mean|layer_(?:{layers})))",
        rf"train/reg/(?:{ivs})(?:/.+)?", rf"val/(?:{ivs})/.+",
    ]
    if sae:
        pats.append(r"sae/.+")
    return pats


def is_reported(name: str, cfg: RunConfig, sae: bool = False) -> bool:
    return any(re.fullmatch(p, name) for p in metric_patterns(cfg, sae))
