"""Config loading: presets, --set overrides, and one-line errors naming file and key path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tti_ray.config import ConfigError, RunConfig, load_config
from tti_ray.config.load import PRESET_DIR
from tti_ray.interventions import Intervention, InterventionConfig, registry

REPO = Path(__file__).resolve().parents[2]


class _DummyCfg(InterventionConfig):
    strength: float = 1.0


class _Dummy(Intervention):
    config_cls = _DummyCfg


@pytest.fixture
def dummy_intervention(monkeypatch):
    """A registered intervention type for the duration of one test (registry restored after)."""
    monkeypatch.setitem(registry._REGISTRY, "dummy", _Dummy)
    return "dummy"


def _write(tmp_path: Path, data: dict | str, name: str = "run.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def _error(path, sets=None, **kw) -> str:
    with pytest.raises(ConfigError) as ei:
        load_config(path, sets, **kw)
    msg = str(ei.value)
    assert "\n" not in msg, msg
    return msg


# -- presets ----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["configs/tiny.yaml", "configs/paper.yaml"])
def test_shipped_configs_load(path):
    cfg = load_config(REPO / path)
    assert isinstance(cfg, RunConfig) and cfg.interventions == {}


def test_preset_values_match_the_issue():
    tiny = load_config(PRESET_DIR / "tiny.yaml")
    assert (tiny.model.n_layer, tiny.model.d_model, tiny.model.seq_len) == (2, 128, 128)
    assert tiny.data.vocab_size is not None and tiny.data.vocab_size <= 8192
    p = load_config(PRESET_DIR / "paper.yaml")
    m, t = p.model, p.train
    assert (m.n_layer, m.d_model, m.n_head, m.ff_dim, m.seq_len) == (6, 384, 6, 1536, 512)
    assert (t.batch_size, t.lr, t.steps, t.weight_decay, t.warmup_steps, t.grad_clip) == (
        32, 3e-4, 50_000, 0.1, 1000, 1.0,
    )
    assert p.data.tokenizer == "gpt2" and p.data.vocab_size is None  # full 50,257 vocabulary


def test_preset_key_merges_under_the_file(tmp_path):
    cfg = load_config(_write(tmp_path, {"preset": "tiny", "name": "x", "train": {"steps": 70}}))
    assert (cfg.name, cfg.train.steps, cfg.train.lr, cfg.model.d_model) == ("x", 70, 2e-3, 128)
    msg = _error(_write(tmp_path, {"preset": "huge"}))
    assert "run.yaml" in msg and "preset" in msg and "huge" in msg


# -- overrides --------------------------------------------------------------------------------
def test_set_overrides_parse_like_yaml():
    cfg = load_config(
        REPO / "configs/tiny.yaml",
        [
            "train.lr=1e-3",
            "train.weight_decay=0",
            "train.grad_clip=null",
            "eval.sites=[mlp_out]",
            "model.tie_embeddings=false",
            "name=my run",
            "data.vocab_size=512",
        ],
    )
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)
    assert cfg.train.weight_decay == 0.0
    assert cfg.train.grad_clip is None
    assert cfg.eval.sites == ["mlp_out"]
    assert cfg.model.tie_embeddings is False
    assert cfg.name == "my run"
    assert cfg.data.vocab_size == 512


def test_yaml_file_reads_1e_minus_3_as_float(tmp_path):
    cfg = load_config(_write(tmp_path, "train:\n  lr: 1e-3\n  weight_decay: 5E-2\n"))
    assert cfg.train.lr == 1e-3 and cfg.train.weight_decay == 0.05


def test_overrides_dict_and_later_set_wins():
    cfg = load_config(
        raw={"train": {"steps": 10}}, overrides={"train.steps": 40, "model.n_layer": 1}
    )
    assert cfg.train.steps == 40 and cfg.model.n_layer == 1


@pytest.mark.parametrize("bad", ["train.lr", "=3", "train..lr=1"])
def test_malformed_set_is_an_error(bad):
    msg = _error(REPO / "configs/tiny.yaml", [bad])
    assert "--set" in msg


def test_set_below_a_value_is_an_error():
    msg = _error(REPO / "configs/tiny.yaml", ["train.lr.x=1"])
    assert "train.lr" in msg and "tiny.yaml" in msg


# -- unknown keys -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data, path",
    [
        ({"bogus": 1}, "bogus"),
        ({"model": {"n_layers": 2}}, "model.n_layers"),
        ({"train": {"learning_rate": 0.1}}, "train.learning_rate"),
        ({"eval": {"sitez": ["mlp_out"]}}, "eval.sitez"),
        ({"data": {"tokeniser": "gpt2"}}, "data.tokeniser"),
    ],
)
def test_unknown_key_in_file_names_file_and_path(tmp_path, data, path):
    msg = _error(_write(tmp_path, data, "typo.yaml"))
    assert "typo.yaml" in msg and f"{path}:" in msg and "unknown key" in msg


def test_unknown_key_inside_an_intervention(tmp_path, dummy_intervention):
    ok = load_config(_write(tmp_path, {"interventions": {"dummy": {"coef": 0.1, "strength": 2.0}}}))
    assert ok.interventions["dummy"].strength == 2.0
    msg = _error(_write(tmp_path, {"interventions": {"dummy": {"strenght": 2.0}}}, "iv.yaml"))
    assert "iv.yaml" in msg and "interventions.dummy.strenght" in msg and "unknown key" in msg
    # a named entry that gives its type explicitly
    msg = _error(_write(tmp_path, {"interventions": {"a": {"type": "dummy", "zz": 1}}}, "iv.yaml"))
    assert "interventions.a.zz" in msg


def test_unknown_intervention_type(tmp_path):
    msg = _error(_write(tmp_path, {"interventions": {"nope": {"coef": 1.0}}}, "iv.yaml"))
    assert "iv.yaml" in msg and "interventions.nope" in msg and "unknown intervention" in msg


def test_unknown_key_via_set_names_flag_and_path():
    msg = _error(REPO / "configs/tiny.yaml", ["model.bogus=1"])
    assert "tiny.yaml" in msg and "model.bogus" in msg


# -- wrong types and ranges ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "data, path",
    [
        ({"model": {"n_layer": "two"}}, "model.n_layer"),
        ({"model": {"n_layer": 2.5}}, "model.n_layer"),
        ({"train": {"lr": "0.001"}}, "train.lr"),
        ({"train": {"grad_clip": [1.0]}}, "train.grad_clip"),
        ({"eval": {"sites": "mlp_out"}}, "eval.sites"),
        ({"eval": {"sites": ["attn"]}}, "eval.sites.0"),
        ({"data": {"source": "web"}}, "data.source"),
        ({"model": 3}, "model"),
    ],
)
def test_wrong_types(tmp_path, data, path):
    msg = _error(_write(tmp_path, data, "types.yaml"))
    assert "types.yaml" in msg and f"{path}:" in msg


@pytest.mark.parametrize(
    "data, path, words",
    [
        ({"train": {"lr": -1e-3}}, "train.lr", "greater than"),
        ({"train": {"steps": 0}}, "train.steps", "greater than"),
        ({"model": {"d_model": 100, "n_head": 3}}, "model", "divisible"),
        ({"train": {"steps": 10, "warmup_steps": 20}}, "train", "warmup_steps"),
        ({"model": {"dropout": 1.0}}, "model.dropout", "less than"),
    ],
)
def test_out_of_range(tmp_path, data, path, words):
    msg = _error(_write(tmp_path, data, "range.yaml"))
    assert "range.yaml" in msg and f"{path}:" in msg and words in msg


def test_several_errors_still_one_line(tmp_path):
    msg = _error(_write(tmp_path, {"model": {"a": 1, "b": 2}, "train": {"c": 3}}))
    assert "more error" in msg


# -- YAML safety ------------------------------------------------------------------------------
def test_malformed_yaml(tmp_path):
    msg = _error(_write(tmp_path, "model:\n  n_layer: [1, 2\ntrain: {", "broken.yaml"))
    assert "broken.yaml" in msg and "invalid YAML" in msg and "line" in msg


def test_top_level_not_a_mapping(tmp_path):
    msg = _error(_write(tmp_path, "- 1\n- 2\n", "list.yaml"))
    assert "list.yaml" in msg and "mapping" in msg


def test_python_tags_are_rejected(tmp_path):
    marker = tmp_path / "pwned"
    text = f"name: !!python/object/apply:os.system ['touch {marker}']\n"
    msg = _error(_write(tmp_path, text, "evil.yaml"))
    assert "evil.yaml" in msg and "invalid YAML" in msg
    assert not marker.exists()
    msg = _error(_write(tmp_path, "model: !!python/object:collections.OrderedDict {}\n", "e2.yaml"))
    assert "e2.yaml" in msg


def test_missing_file():
    msg = _error("/nonexistent/dir/cfg.yaml")
    assert "/nonexistent/dir/cfg.yaml" in msg and "cannot read" in msg


# -- --preset paper ---------------------------------------------------------------------------
def test_preset_paper_rebases_a_tiny_based_file(tmp_path, dummy_intervention):
    tiny = yaml.safe_load((PRESET_DIR / "tiny.yaml").read_text())
    data = {
        **tiny,
        "preset": "tiny",
        "name": "l1-demo",
        "interventions": {"dummy": {"coef": 0.05, "strength": 3.0}},
    }
    path = _write(tmp_path, data, "l1.yaml")
    small = load_config(path)
    assert small.model.n_layer == 2
    big = load_config(path, preset="paper")
    assert big.preset == "paper" and big.name == "l1-demo"
    assert (big.model.n_layer, big.model.d_model, big.model.seq_len) == (6, 384, 512)
    assert big.train.steps == 50_000 and big.train.lr == 3e-4 and big.data.vocab_size is None
    iv = big.interventions["dummy"]
    assert (iv.type, iv.coef, iv.strength) == ("dummy", 0.05, 3.0)
    # --set still applies on top of the new preset
    assert load_config(path, ["train.steps=5000"], preset="paper").train.steps == 5000


def test_preset_paper_on_the_shipped_tiny_config():
    big = load_config(REPO / "configs/tiny.yaml", preset="paper")
    assert (big.model.n_layer, big.model.d_model, big.train.steps) == (6, 384, 50_000)
    msg = _error(REPO / "configs/tiny.yaml", preset="huge")
    assert "--preset" in msg and "huge" in msg


def test_to_dict_round_trips(tmp_path, dummy_intervention):
    cfg = load_config(raw={"interventions": {"dummy": {"coef": 0.5}}, "train": {"lr": 1e-4}})
    again = load_config(_write(tmp_path, cfg.to_dict()))
    assert again == cfg


# -- issue 22: the YAML loader refuses duplicate keys and undecodable files ---------------------------
def test_duplicate_keys_are_refused_with_both_lines(tmp_path):
    import pytest

    from tti_ray.config import ConfigError, read_yaml

    p = tmp_path / "c.yaml"
    p.write_text("train:\n  steps: 4\nmodel: {n_layer: 1}\ntrain:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"line 4.*duplicate key 'train' \(first at line 1\)"):
        read_yaml(p)


def test_merge_keys_may_be_overridden(tmp_path):
    from tti_ray.config import read_yaml

    p = tmp_path / "c.yaml"
    p.write_text("a: &x {b: 1, c: 2}\nd:\n  <<: *x\n  b: 3\n")
    assert read_yaml(p) == {"a": {"b": 1, "c": 2}, "d": {"b": 3, "c": 2}}


def test_non_utf8_file_is_one_line(tmp_path):
    import pytest

    from tti_ray.config import ConfigError, read_yaml

    p = tmp_path / "c.yaml"
    p.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xe9 at offset 9\)"):
        read_yaml(p)
