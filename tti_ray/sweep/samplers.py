"""The Optuna sampler a search space asks for: TPE (constant liar, multivariate: parallel trials),
NSGA-II, GP, random or grid. Used by the searcher and, to refuse a bad space before anything
starts, by :mod:`tti_ray.sweep.plan_checks` (which must not import the Ray-backed searcher).
"""

from __future__ import annotations

from typing import Any


def make_sampler(space: Any) -> Any:
    """The Optuna sampler of ``space.searcher`` (a :class:`~tti_ray.sweep.space.SearchSpace`)."""
    import optuna.samplers as s

    seed = space.searcher.seed
    kind = space.searcher.type
    n = space.n_configs()
    startup = space.searcher.n_startup_trials or max(2, min(10, n // 3))
    if kind == "tpe":
        return s.TPESampler(
            seed=seed, constant_liar=True, multivariate=True, n_startup_trials=startup
        )
    if kind == "nsga2":
        return s.NSGAIISampler(seed=seed, population_size=max(4, min(50, n // 3)))
    if kind == "gp":
        return s.GPSampler(seed=seed, n_startup_trials=startup)
    if kind == "random" or space.configurations is not None:
        return s.RandomSampler(seed=seed)  # explicit configurations are enqueued, not sampled
    return s.GridSampler({k: p.values for k, p in space.parameters.items()}, seed=seed)
