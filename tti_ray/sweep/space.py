"""Search-space files: a validated YAML format for multi-objective sweeps.

```yaml
name: anti_poly                      # experiment name (default: file stem)
base:                                # a run config: preset + any overrides (validated)
  preset: tiny
  interventions: {anti_poly: {coef: 0.0}}
parameters:                          # searched, by dotted run-config path
  interventions.anti_poly.coef: {distribution: loguniform, low: 1.0e-4, high: 1.0e-1}
  interventions.topk.k: {values: [0.1, 0.25, 0.5]}          # a fixed list (grid or choice)
objectives:                          # default: val/perplexity:min, val/polysemanticity/mean:min
  - {metric: val/perplexity, mode: min}
constraints:                         # trials that violate one are never on the front
  - {metric: val/dead_fraction/mean, max: 0.2}
  - {metric: val/perplexity, max_ratio_to_baseline: 1.10}           # needs a baseline
searcher: {type: tpe, seed: 0}       # tpe | nsga2 | gp | random | grid
budget: {trials: 8, seeds_per_config: 1}
configurations: null                 # grid only: an explicit list of points instead of the product
baseline: null                       # a point: per-config Welch t-tests against it (summary.csv)
report_metrics: []                   # extra metrics for summary.csv besides the objectives
sae_eval: {cpus: 1, config: {kind: topk, k: 32, expansion: 8}}   # SAE-evaluate finished trials
resources: {workers: 1, cpus_per_worker: 1, gpus_per_worker: 0}
concurrency: 2
scheduler: {type: none}              # or {type: mo_asha, grace_steps: 100, reduction_factor: 3}
study_storage: null                  # SQLAlchemy URL; default sqlite:///<exp dir>/optuna.db
```

Every parameter path is checked against the run config at load time by validating the base
config with the parameter's extreme values, so a typo or an out-of-range bound is an error naming
``parameters.<path>`` before anything starts.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from tti_ray.config import ConfigError, RunConfig, load_config
from tti_ray.config.base import KeyPathError, Section
from tti_ray.config.load import (
    _rebase_on_preset,
    apply_override,
    format_validation_error,
    parse_sets,
    read_yaml,
    resolve_raw,
    validate,
)
from tti_ray.sweep.constraints import CONSTRAINED_SEARCHERS, Constraint
from tti_ray.sweep.plan_checks import blame_set, check_plan
from tti_ray.trials import config_id  # noqa: F401 - re-exported

Distribution = Literal["loguniform", "uniform", "int", "logint", "choice"]
MAX_VALUES = 10_000  # a choice list, an explicit configuration list
MAX_GRID = 100_000  # points of a grid (the product of its axes)
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
DEFAULT_OBJECTIVES = [
    {"metric": "val/perplexity", "mode": "min"},
    {"metric": "val/polysemanticity/mean", "mode": "min"},
]


class Parameter(Section):
    """One searched dimension. ``values`` alone means a fixed list (choice, or a grid axis)."""

    distribution: Distribution | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = Field(None, gt=0)
    values: list[Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _values_mean_choice(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("values") is not None:
            if data.get("distribution", "choice") != "choice":
                raise ValueError("'values' goes with distribution 'choice' (or none)")
            data = {**data, "distribution": "choice"}
        return data

    @model_validator(mode="after")
    def _shape(self) -> Parameter:
        if self.values is not None:
            if not self.values:
                raise ValueError("values: needs at least one value")
            if len(self.values) > MAX_VALUES:
                raise ValueError(f"values: {len(self.values)} values, more than {MAX_VALUES:,}")
            extra = [k for k in ("low", "high", "step") if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"{extra[0]}: goes with a distribution, not with 'values'")
            return self
        if self.distribution in (None, "choice"):
            raise ValueError("needs 'values: [...]' or a distribution with low/high")
        if self.low is None or self.high is None:
            raise ValueError(f"distribution {self.distribution!r} needs low and high")
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"low and high must be finite (got {self.low}, {self.high})")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        if self.distribution in ("loguniform", "logint") and self.low <= 0:
            raise ValueError(f"{self.distribution} needs low > 0")
        d, step = self.distribution, self.step
        if d in ("int", "logint"):
            for k in ("low", "high"):
                if not float(getattr(self, k)).is_integer():
                    raise ValueError(f"{k}: {d} bounds must be integers, got {getattr(self, k)}")
        if step is not None:
            if d in ("loguniform", "logint"):
                raise ValueError(f"step: {d} takes no step (a log-scale search has none)")
            if d == "int" and not float(step).is_integer():
                raise ValueError(f"step: an int step must be a whole number ≥ 1, got {step}")
            if step > self.high - self.low:
                raise ValueError(f"step: {step} is larger than the range high - low = "
                                 f"{self.high - self.low} (the search would have one value)")
        return self

    def extremes(self) -> list[Any]:
        if self.values is not None:
            return list(self.values)
        if self.distribution in ("int", "logint"):
            return [int(self.low), int(self.high)]  # type: ignore[arg-type]
        return [self.low, self.high]

    def optuna_distribution(self) -> Any:
        import optuna.distributions as od

        if self.values is not None:
            return od.CategoricalDistribution(self.values)
        if self.distribution == "loguniform":
            return od.FloatDistribution(self.low, self.high, log=True)
        if self.distribution == "uniform":
            return od.FloatDistribution(self.low, self.high, step=self.step)
        return od.IntDistribution(
            int(self.low), int(self.high), log=self.distribution == "logint",
            step=int(self.step or 1),
        )


class Objective(Section):
    metric: str
    mode: Literal["min", "max"] = "min"


class Searcher(Section):
    type: Literal["tpe", "nsga2", "gp", "random", "grid"] = "tpe"
    seed: int = Field(0, ge=0)
    n_startup_trials: int | None = Field(None, ge=1)


class Budget(Section):
    trials: int | None = Field(8, ge=1)
    seeds_per_config: int = Field(1, ge=1)


class Resources(Section):
    workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    custom: dict[str, float] = Field(default_factory=dict)
    # 1-worker trials run in one long-lived Ray actor each instead of a fresh process per trial
    # (saves the process start and the torch/tti_ray imports); DDP trials never reuse
    reuse_actors: bool = True


class Scheduler(Section):
    """``mo_asha``: multi-objective asynchronous successive halving (see ``scheduler.py``)."""

    type: Literal["none", "mo_asha"] = "none"
    grace_steps: int = Field(100, ge=1)
    reduction_factor: float = Field(3.0, gt=1.0)


class SAEEval(Section):
    """SAE evaluation of every finished trial (issue 6): ``config`` is a :mod:`tti_ray.sae`
    config (default TopK, k = 32, expansion 8); ``cpus``/``gpus`` the resources of each
    evaluation task."""

    enabled: bool = True
    cpus: float = Field(1.0, gt=0)
    gpus: float = Field(0.0, ge=0)
    config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("config")
    @classmethod
    def _valid_sae(cls, v: dict[str, Any]) -> dict[str, Any]:
        from tti_ray.sae import parse_sae_config

        return parse_sae_config(v, prefix="sae_eval.config").model_dump(mode="json")


class SearchSpace(Section):
    name: str
    description: str = ""
    base: dict[str, Any] = Field(default_factory=lambda: {"preset": "tiny"})
    parameters: dict[str, Parameter]
    objectives: list[Objective] = Field(
        default_factory=lambda: [Objective(**o) for o in DEFAULT_OBJECTIVES]
    )
    constraints: list[Constraint] = Field(default_factory=list)
    searcher: Searcher = Field(default_factory=Searcher)
    budget: Budget = Field(default_factory=Budget)
    resources: Resources = Field(default_factory=Resources)
    concurrency: int = Field(2, ge=1)
    scheduler: Scheduler = Field(default_factory=Scheduler)
    study_storage: str | None = None
    max_failures: int = Field(2, ge=0)
    configurations: list[dict[str, Any]] | None = None
    baseline: dict[str, Any] | None = None
    report_metrics: list[str] = Field(default_factory=list)
    sae_eval: SAEEval | None = None

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        # the name becomes experiments/<name>/ and the Optuna study: no path, no escape
        if not NAME_RE.fullmatch(v) or ".." in v:
            raise ValueError(f"must be a plain name (letters, digits, '.', '_', '-'; no '/' or "
                             f"'..'), got {v[:60]!r}")
        return v

    @field_validator("parameters")
    @classmethod
    def _nonempty(cls, v: dict[str, Parameter]) -> dict[str, Parameter]:
        if not v:
            raise ValueError("empty search space: name at least one parameter")
        return v

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: list[Objective]) -> list[Objective]:
        if not v:
            raise ValueError("needs at least one objective")
        names = [o.metric for o in v]
        if len(set(names)) != len(names):
            raise ValueError("objective metrics must be distinct")
        return v

    @model_validator(mode="after")
    def _grid(self) -> SearchSpace:
        if self.searcher.type == "grid":
            bad = [k for k, p in self.parameters.items() if p.values is None]
            if bad:
                raise ValueError(f"searcher grid needs 'values' lists; {bad[0]} has a distribution")
            size = math.prod(len(p.values or ()) for p in self.parameters.values())
            if self.configurations is None and size > MAX_GRID:
                raise ValueError(f"parameters: the grid has {size:,} points, more than "
                                 f"{MAX_GRID:,}")
        elif self.budget.trials is None:
            raise ValueError(f"budget.trials: null (every grid point) needs searcher grid; "
                             f"give {self.searcher.type} a number of trials")
        if self.configurations is not None:
            if len(self.configurations) > MAX_VALUES:
                raise ValueError(f"configurations: {len(self.configurations)} points, more than "
                                 f"{MAX_VALUES:,}")
            if self.searcher.type != "grid":
                raise ValueError("configurations: an explicit list needs searcher type 'grid'")
            if not self.configurations:
                raise ValueError("configurations: needs at least one configuration")
            for i, point in enumerate(self.configurations):
                self._check_point(point, f"configurations[{i}]")
        if self.baseline is not None:
            self._check_point(self.baseline, "baseline")
        return self

    def _check_point(self, point: dict[str, Any], where: str) -> None:
        if set(point) != set(self.parameters):
            missing = sorted(set(self.parameters) - set(point))
            extra = sorted(set(point) - set(self.parameters))
            raise ValueError(f"{where}: must set exactly the parameters "
                             f"(missing {missing}, unknown {extra})")
        for k, v in point.items():
            p = self.parameters[k]
            if p.values is not None and v not in p.values:
                raise ValueError(f"{where}: {k}={v!r} is not one of its values {p.values}")

    @model_validator(mode="after")
    def _constraints(self) -> SearchSpace:
        if not self.constraints:
            return self
        if self.searcher.type not in CONSTRAINED_SEARCHERS:
            raise ValueError(
                f"constraints: searcher {self.searcher.type!r} cannot use them (only Optuna's "
                f"{', '.join(CONSTRAINED_SEARCHERS)} samplers read trials' constraint values)"
            )
        if any(c.relative for c in self.constraints) and self.baseline is None:
            raise ValueError("constraints: a *_ratio_to_baseline constraint needs a 'baseline' "
                             "point (it runs first)")
        return self

    @property
    def first_points(self) -> list[dict[str, Any]] | None:
        """Points enqueued before sampling: the explicit configurations, or the baseline when a
        relative constraint needs it measured first."""
        if self.configurations is not None:
            return self.grid_points()
        if self.baseline is not None and any(c.relative for c in self.constraints):
            return [dict(self.baseline)]
        return None

    @model_validator(mode="after")
    def _sae_objectives(self) -> SearchSpace:
        if any(m.startswith("sae/") for m in self.metrics) and not (
            self.sae_eval and self.sae_eval.enabled
        ):
            raise ValueError("objectives: sae/ metrics need an enabled sae_eval section")
        return self

    @property
    def sae_inline(self) -> bool:
        """SAE metrics are objectives: each trial evaluates its own checkpoint before it ends."""
        return any(m.startswith("sae/") for m in self.metrics)

    # -- derived ---------------------------------------------------------------------------------
    @property
    def metrics(self) -> list[str]:
        return [o.metric for o in self.objectives]

    @property
    def modes(self) -> list[str]:
        return [o.mode for o in self.objectives]

    def grid_points(self) -> list[dict[str, Any]]:
        if self.configurations is not None:
            return [dict(p) for p in self.configurations]
        keys = list(self.parameters)
        vals = [self.parameters[k].extremes() for k in keys]
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*vals)]

    def n_configs(self) -> int:
        if self.searcher.type == "grid":
            return len(self.grid_points())
        assert self.budget.trials is not None
        return self.budget.trials

    def n_trials(self) -> int:
        return self.n_configs() * self.budget.seeds_per_config

    def run_config(self, params: dict[str, Any], seed: int | None = None) -> RunConfig:
        overrides = dict(params)
        if seed is not None:
            overrides["train.seed"] = seed
        return load_config(raw=self.base, overrides=overrides)


def load_search_space(
    path: str | Path, sets: list[str] | None = None, preset: str | None = None
) -> SearchSpace:
    """Read, override (``--set a.b=v`` on the search-space file), validate, and check every
    parameter against the run config. Errors: :class:`ConfigError`, one line, file + key."""
    path = Path(path)
    raw = read_yaml(path)
    raw.setdefault("name", path.stem)
    if preset is not None:  # first the scale, then the user's --set tweaks on top of it
        base = raw.get("base") if isinstance(raw.get("base"), dict) else {}
        raw["base"] = _rebase_on_preset(copy.deepcopy(base), preset, str(path))
    pairs = parse_sets(sets)
    for key, value in pairs:
        apply_override(raw, key, value, f"--set {key}")
    try:
        try:
            space = SearchSpace.model_validate(raw)
        except ValidationError as e:
            raise ConfigError(format_validation_error(e, str(path))) from None
        except KeyPathError as e:
            raise ConfigError(f"{path}: {e.path}: {e.msg}") from None
        _check_base(space, path)
    except ConfigError as e:
        raise ConfigError(blame_set(str(e), str(path), sets or [])) from None
    return space


def _check_base(space: SearchSpace, path: Path) -> None:
    from tti_ray.sweep.metric_names import is_reported

    try:
        base = load_config(raw=space.base)
    except ConfigError as e:
        raise ConfigError(f"{path}: base: {str(e).split(': ', 1)[1]}") from None
    sae = bool(space.sae_eval and space.sae_eval.enabled)
    constraint_metrics = [c.metric for c in space.constraints]
    for field, names in (("objectives", space.metrics), ("report_metrics", space.report_metrics),
                         ("constraints", constraint_metrics)):
        for i, name in enumerate(names):
            if not is_reported(name, base, sae):
                key = f"{field}[{i}].metric" if field != "report_metrics" else f"{field}[{i}]"
                example = "toy/…" if base.workload != "lm" else "val/perplexity, val/<metric>/mean"
                raise ConfigError(
                    f"{path}: {key}: no trial reports {name!r} (e.g. {example})"
                )
    # the base with its preset merged once: each point then costs one validation (~30 µs), so
    # a 10,000-value choice is checked value by value in well under a second
    resolved = resolve_raw(copy.deepcopy(space.base), "<config>")

    def check(overrides: dict[str, Any]) -> None:
        data = dict(resolved)
        for k, v in overrides.items():  # copy only the mappings on the overridden path
            node, keys = data, k.split(".")
            for key in keys[:-1]:
                if not isinstance(node.get(key), dict):
                    break
                node[key] = dict(node[key])
                node = node[key]
            apply_override(data, k, v, "<config>")
        validate(data, "<config>")

    for i, point in enumerate(space.configurations or []):
        try:
            check(point)
        except ConfigError as e:
            raise ConfigError(f"{path}: configurations[{i}]: {str(e).split(': ', 1)[1]}") from None
    for key, param in space.parameters.items():
        for value in param.extremes():
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{path}: parameters.{key}: non-finite value {value}")
            try:
                check({key: value})
            except ConfigError as e:
                detail = str(e).split(": ", 1)[1].removeprefix(f"{key}: ")
                raise ConfigError(f"{path}: parameters.{key}: {detail}") from None
    check_plan(space, base, path)
