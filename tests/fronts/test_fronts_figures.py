"""The plots write non-empty PNGs, including for 0 and 1 finished trials."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tti_ray.fronts.figures import plot_front, plot_hypervolume_history

PPL, POLY = "val/perplexity", "val/polysemanticity/mean"
OBJ = f"{PPL}:min,{POLY}:min"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def trials(n: int, **extra) -> pd.DataFrame:
    rng = np.random.default_rng(n)
    df = pd.DataFrame(
        {
            "trial_id": [f"t{i}" for i in range(n)],
            "config_id": [f"c{i}" for i in range(n)],
            "status": ["finished"] * n,
            "interventions.anti_poly.coef": rng.random(n),
            PPL: rng.uniform(10, 20, n),
            POLY: rng.uniform(1, 5, n),
        }
    )
    return df.assign(**extra)


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000


@pytest.mark.parametrize("n", [0, 1, 2, 25])
def test_plot_front_any_size(tmp_path, n):
    assert_png(plot_front(trials(n), OBJ, tmp_path / f"front{n}.png"))


def test_plot_front_colour_options(tmp_path):
    df = trials(30)
    df["method"] = np.where(np.arange(30) % 3 == 0, "topk", "anti_poly")
    df.loc[0, "status"] = "diverged"
    assert_png(plot_front(df, OBJ, tmp_path / "method.png"))  # method picked up by default
    assert_png(plot_front(df, OBJ, tmp_path / "coef.png", color_by="interventions.anti_poly.coef"))
    assert_png(plot_front(df, f"{PPL}:min,{POLY}:max", tmp_path / "sub" / "mixed.png"))
    df["sae/l0"] = np.arange(30.0)
    assert_png(plot_front(df, f"{OBJ},sae/l0:min", tmp_path / "three.png"))
    with pytest.raises(ValueError, match="color_by"):
        plot_front(df, OBJ, tmp_path / "x.png", color_by="nope")
    with pytest.raises(ValueError, match="two objectives"):
        plot_front(df, f"{PPL}:min", tmp_path / "x.png")


def test_plot_hypervolume_history(tmp_path):
    assert_png(plot_hypervolume_history([0.0, 1.0, 1.0, 2.5], tmp_path / "floats.png"))
    report_history = [{"n_completed": k, "hypervolume": float(k)} for k in (1, 2, 3)]
    assert_png(plot_hypervolume_history(report_history, tmp_path / "report.png"))
    assert_png(
        plot_hypervolume_history({"grid": [0, 1, 2], "tpe": report_history}, tmp_path / "cmp.png")
    )
    assert_png(plot_hypervolume_history([], tmp_path / "empty.png"))
    assert_png(plot_hypervolume_history([3.0], tmp_path / "one.png"))
