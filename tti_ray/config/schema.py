"""Typed run configuration: model / data / train / eval / interventions.

Every section forbids unknown keys and validates ranges at load time, so a typo in a YAML file or a
``--set`` override is an error naming the key path, never a silent no-op (nanoGPT / SAELens style).
Interventions and toy workloads are validated by the config class their registry holds for their
kind (:data:`INTERVENTIONS`, :data:`TOY_WORKLOADS`; ``tti_ray.interventions`` and ``tti_ray.toy``
register into them), each receiving only its own slice of the config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from tti_ray.config.base import KeyPathError, Registry, Section
from tti_ray.config.lexicon import validate_kind

Site = Literal["mlp_hidden", "mlp_out"]
SITES: tuple[str, ...] = ("mlp_hidden", "mlp_out")


class SiteSelection(Section):
    """Where a component acts: sites (``mlp_hidden``, ``mlp_out``) and layers (``"all"`` or
    indices). Shared by interventions and SAE evaluation."""

    sites: list[Site] = Field(default_factory=lambda: ["mlp_hidden"])
    layers: Literal["all"] | list[int] = "all"

    @field_validator("sites")
    @classmethod
    def _sites_nonempty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("needs at least one site")
        return list(dict.fromkeys(v))

    @field_validator("layers")
    @classmethod
    def _layers_valid(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("needs at least one layer (or 'all')")
            if any(i < 0 for i in v):
                raise ValueError("layer indices must be >= 0")
            return sorted(set(v))
        return v


class ModelConfig(Section):
    """GPT-2 style decoder. ``d_ff`` defaults to ``4 * d_model``."""

    n_layer: int = Field(2, ge=1, le=128)
    d_model: int = Field(128, ge=8)
    n_head: int = Field(4, ge=1)
    d_ff: int | None = Field(None, ge=1)
    seq_len: int = Field(128, ge=8, le=8192)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    activation: Literal["gelu_new", "gelu", "relu"] = "gelu_new"
    tie_embeddings: bool = True

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelConfig:
        if self.d_model % self.n_head:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})"
            )
        return self

    @property
    def ff_dim(self) -> int:
        return self.d_ff or 4 * self.d_model


class DataConfig(Section):
    """Where tokens come from.

    ``source: bundled`` reads the TinyStories sample shipped in the package (offline default);
    ``source: hf`` streams ``hf_dataset`` through ``datasets.load_dataset`` (needs the hub or a
    local HF cache). ``tokenizer: tinystories-bpe`` is a byte-level BPE with 8,192 ids trained on the
    bundled sample (the tiny preset's), ``gpt2`` OpenAI's GPT-2 BPE (50,257 ids, the seed's and
    the paper preset's), both shipped in the package; ``hf:<name>`` loads any tokenizer with
    ``transformers.AutoTokenizer``. A ``vocab_size`` below the tokenizer's size remaps its ids to
    the N-1 most frequent training ids plus one UNK id (how the tiny preset used GPT-2's BPE
    before it had its own; such checkpoints ship no HF tokenizer); ``null`` or a size at least
    the tokenizer's keeps its ids.
    """

    source: Literal["bundled", "hf"] = "bundled"
    hf_dataset: str = "roneneldan/TinyStories"
    hf_text_field: str = "text"
    hf_train_split: str = "train"
    hf_valid_split: str = "validation"
    max_train_stories: int | None = Field(None, ge=1)
    tokenizer: str = "tinystories-bpe"
    vocab_size: int | None = Field(8192, ge=16)
    cache_dir: str | None = None

    @field_validator("tokenizer")
    @classmethod
    def _tokenizer_form(cls, v: str) -> str:
        if v not in ("tinystories-bpe", "gpt2") and not (v.startswith("hf:") and len(v) > 3):
            raise ValueError(
                "must be 'tinystories-bpe' or 'gpt2' (bundled) or 'hf:<hub name or local path>'"
            )
        return v


class TrainConfig(Section):
    """Optimisation. ``batch_size`` is the global batch per optimizer step (sequences), split over
    gradient-accumulation micro-steps and data-parallel workers."""

    steps: int = Field(300, ge=1)
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0)
    weight_decay: float = Field(0.1, ge=0.0)
    warmup_steps: int = Field(30, ge=0)
    grad_clip: float | None = Field(1.0, gt=0.0)
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.95, ge=0.0, lt=1.0)
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    eval_every: int = Field(100, ge=1)
    ckpt_every: int = Field(100, ge=1)
    log_every: int = Field(10, ge=1)
    threads: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _warmup_fits(self) -> TrainConfig:
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) exceeds steps ({self.steps})")
        return self


class EvalConfig(Section):
    """Validation loss on ``val_batches`` fixed batches; interpretability metrics on a fixed
    sample of ``metric_tokens`` validation tokens, at ``sites`` of every layer."""

    val_batches: int = Field(8, ge=1)
    metric_tokens: int = Field(4096, ge=64)
    sites: list[Site] = Field(default_factory=lambda: list(SITES))
    active_threshold: float = Field(0.01, gt=0.0)
    # a neuron is live when active on at least this share of the sample's tokens
    live_min_freq: float = Field(0.01, gt=0.0, lt=1.0)
    # permutations of the token ids for the calibrated polysemanticity (0: not computed)
    permutations: int = Field(4, ge=0, le=64)
    permutation_seed: int = Field(0, ge=0)
    monosemantic_threshold: float = Field(0.5, gt=0.0)
    # token categories for the category metrics (coarse | lexicon | path to a JSON lexicon);
    # default: those of a category anti_poly intervention, if any
    categories: str | None = None

    @field_validator("sites")
    @classmethod
    def _nonempty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("needs at least one site")
        return list(dict.fromkeys(v))

    @field_validator("categories")
    @classmethod
    def _categories_valid(cls, v: str | None) -> str | None:
        if v is None:
            return v
        return validate_kind(v)


class InterventionConfig(SiteSelection):
    """Fields every intervention has.

    ``coef`` multiplies the loss terms (architectural-only interventions may ignore it);
    ``coef_warmup_steps`` ramps it linearly from 0 over that many steps; ``sites`` and ``layers``
    pick where it acts (``"all"`` or a list of layer indices)."""

    type: str
    coef: float = Field(0.0, ge=0.0)
    coef_warmup_steps: int = Field(0, ge=0)


#: intervention type -> its ``Intervention`` class (whose ``config_cls`` validates its settings)
INTERVENTIONS: Registry[Any] = Registry(
    "intervention",
    config_of=lambda cls: cls.config_cls,
    unknown="unknown intervention {kind!r} (registered: {names})",
    builtins="tti_ray.interventions",
)

#: toy config kind (``superposition`` | ``ablation``) -> its config class
TOY_WORKLOADS: Registry[Any] = Registry(
    "toy workload",
    config_of=lambda cls: cls,
    unknown="must be one of {choices}",
    key="kind",
    builtins="tti_ray.toy",
)
WORKLOAD_KIND: dict[str, str] = {"toy_superposition": "superposition", "toy_ablation": "ablation"}


def parse_interventions(v: Any) -> dict[str, InterventionConfig]:
    """Validate the ``interventions`` mapping, each entry by its own config class."""
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise KeyPathError("interventions", "must be a mapping of name -> settings")
    out: dict[str, InterventionConfig] = {}
    for name, entry in v.items():
        path = f"interventions.{name}"
        if isinstance(entry, InterventionConfig):
            out[name] = entry
            continue
        if entry is None:
            entry = {}
        if not isinstance(entry, Mapping):
            raise KeyPathError(path, "must be a mapping of settings")
        kind_path = path if "type" not in entry else f"{path}.type"
        out[name] = INTERVENTIONS.parse(entry.get("type", name), entry, path, kind_path)
    return out


def check_against_model(cfgs: Mapping[str, InterventionConfig], model_cfg: ModelConfig) -> None:
    for name, cfg in cfgs.items():
        if isinstance(cfg.layers, list) and max(cfg.layers) >= model_cfg.n_layer:
            raise KeyPathError(
                f"interventions.{name}.layers",
                f"layer {max(cfg.layers)} does not exist (model has {model_cfg.n_layer} layers)",
            )


def parse_toy_config(v: Any, *, workload: str | None = None) -> Any:
    """Validate a ``toy:`` section (mapping or config instance) into its config model.

    ``kind`` picks the model; when it is missing and ``workload`` is given (``toy_superposition``
    / ``toy_ablation``) it is inferred from the workload. Errors are :class:`KeyPathError` with a
    ``toy.<field>`` path."""
    if isinstance(v, tuple(TOY_WORKLOADS.entries().values())):
        cfg = v
    else:
        if not isinstance(v, Mapping):
            raise KeyPathError(
                "toy", "must be a mapping of settings (kind: superposition | ablation)"
            )
        data = dict(v)
        if "kind" not in data and workload in WORKLOAD_KIND:
            data["kind"] = WORKLOAD_KIND[workload]
        cfg = TOY_WORKLOADS.parse(data.get("kind"), data, "toy", "toy.kind")
    if workload is not None:
        check_workload(workload, cfg)
    return cfg


def check_workload(workload: str, toy_cfg: Any) -> None:
    """Raise :class:`KeyPathError` unless ``workload`` and the toy section agree.

    ``lm`` takes no ``toy:`` section; a toy workload takes one of its own kind or none (then
    ``tti_ray.toy.resolve_toy`` supplies the defaults)."""
    if workload not in WORKLOAD_KIND:
        if toy_cfg is not None:
            raise KeyPathError(
                "toy",
                f"a toy section needs workload {' or '.join(WORKLOAD_KIND)} (got {workload!r})",
            )
        return
    expected = WORKLOAD_KIND[workload]
    if toy_cfg is not None and toy_cfg.kind != expected:
        raise KeyPathError(
            "toy.kind",
            f"{toy_cfg.kind!r} does not match workload {workload!r} (needs {expected!r})",
        )


class RunConfig(Section):
    """One training run. ``interventions`` maps a name to that intervention's settings; the key is
    the registered intervention type unless the entry names ``type:`` itself."""

    name: str = "run"
    preset: str | None = None
    workload: Literal["lm", "toy_superposition", "toy_ablation"] = "lm"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    interventions: dict[str, Any] = Field(default_factory=dict)
    toy: Any = None  # a tti_ray.toy config (discriminated by ``kind``), validated below

    @field_validator("interventions", mode="before")
    @classmethod
    def _build_interventions(cls, v: Any) -> dict[str, Any]:
        return parse_interventions(v)

    @field_validator("toy", mode="before")
    @classmethod
    def _build_toy(cls, v: Any, info: ValidationInfo) -> Any:
        if v is None:
            return None
        return parse_toy_config(v, workload=info.data.get("workload"))

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        check_against_model(self.interventions, self.model)
        if self.workload != "lm" or self.toy is not None:
            check_workload(self.workload, self.toy)
        if self.model.seq_len < 2:
            raise ValueError("model.seq_len must be >= 2")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-safe dict of the resolved config (interventions included)."""
        out = self.model_dump(mode="json", exclude={"interventions", "toy"})
        out["interventions"] = {
            name: {"type": cfg.type, **cfg.model_dump(mode="json", exclude={"type"})}
            for name, cfg in self.interventions.items()
        }
        out["toy"] = None if self.toy is None else self.toy.model_dump(mode="json")
        return out
