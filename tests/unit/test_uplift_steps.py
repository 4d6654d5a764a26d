"""The uplift steps moved out of the wiring: the truth join, Qini figures, the registrable effect model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from omnicrm.errors import InputError
from omnicrm.uplift import metrics as M
from omnicrm.uplift.config import learner_factory
from omnicrm.uplift.data import ARM, TableSource, table_data
from omnicrm.uplift.evaluate import evaluate, qini_by_action
from omnicrm.uplift.model import EffectModel, fit_effect_model
from omnicrm.uplift.plots import qini_figure, qini_figures
from omnicrm.uplift.truth import person_customers, true_effects

from .test_uplift_learners import SMALL, simulate


def test_truth_maps_people_to_customers_and_averages_merged_people() -> None:
    """P1 and P2 became customer C1 (two records each way); P3's record was never linked; C9 has no person."""
    truth = pd.DataFrame(
        {
            "person_id": ["P1", "P2", "P3", "P1"],
            "campaign_id": ["K1", "K1", "K1", "K2"],
            "effect_a": [0.10, 0.30, 0.50, 0.20],
            "effect_b": [-0.1, 0.1, 0.0, 0.4],
            "baseline_p": [0.2, 0.2, 0.2, 0.2],
        }
    )
    owner = pd.DataFrame(
        {
            "source": ["crm", "pos", "crm", "crm"],
            "record_key": ["m1", "r1", "m2", "m3"],
            "person_id": ["P1", "P1", "P2", "P3"],
        }
    )
    links = pd.DataFrame(
        {
            "source": ["crm", "pos", "crm", "shop", None],
            "source_record_id": ["m1", "r1", "m2", "s1", "m3"],
            "customer_id": ["C1", "C1", "C1", "C9", "C5"],
        }
    )
    assert person_customers(owner, links).to_dict("records") == [
        {"person_id": "P1", "customer_id": "C1"},
        {"person_id": "P2", "customer_id": "C1"},
    ]
    rows = pd.DataFrame({"customer_id": ["C9", "C1", "C1"], "campaign_id": ["K1", "K1", "K2"]})
    got = true_effects(truth, owner, links, rows)
    assert list(got.columns) == ["a", "b"]  # effect_ columns only, prefix dropped
    assert np.isnan(got.loc[0, "a"])  # C9: no person maps to it
    assert got.loc[1, "a"] == pytest.approx(0.20) and got.loc[1, "b"] == pytest.approx(0.0)  # mean of P1, P2
    assert got.loc[2, "a"] == pytest.approx(0.20)  # K2: P1 only


def test_truth_inputs_missing_columns_are_named() -> None:
    with pytest.raises(InputError, match=r"record owner table: missing column\(s\) \['record_key'\]"):
        person_customers(pd.DataFrame({"source": [], "person_id": []}), pd.DataFrame())
    rows = pd.DataFrame({"customer_id": [], "campaign_id": []})
    owner = pd.DataFrame({"source": [], "record_key": [], "person_id": []})
    links = pd.DataFrame({"source": [], "source_record_id": [], "customer_id": []})
    with pytest.raises(InputError, match="no effect_<action> column"):
        true_effects(pd.DataFrame({"person_id": [], "campaign_id": []}), owner, links, rows)


@pytest.fixture(scope="module")
def arms_data():  # noqa: ANN201
    X, arm, y, _ = simulate(1500, seed=3)
    frame = X.assign(arm=arm, y=y, segment=np.where(X["x0"] > 0.5, "hi", "lo"))
    return frame


def test_qini_figures_one_line_per_learner_and_random(arms_data: pd.DataFrame) -> None:
    from omnicrm.uplift.config import EffectsSettings, UpliftConfig

    cfg = UpliftConfig(
        name="t",
        source=TableSource(
            kind="table", path="t.csv", treatment="arm", control="ctrl", outcomes=["y"], features=["x0"]
        ),
        learners={"model": SMALL},
        effects=EffectsSettings(outcome="y"),
    )
    y = arms_data["y"].to_numpy()
    learners = {n: learner_factory(cfg, n, "ctrl", y) for n in ("S", "T")}
    X = arms_data[["x0", "x1", "noise"]]
    ev = evaluate(learners, X, arms_data[ARM].to_numpy(dtype=object), y, np.arange(len(y)), "ctrl", "y", [0], 2)
    figs = qini_figures(ev)
    assert list(figs) == ["a", "b"] and all(isinstance(f, Figure) for f in figs.values())
    ax = qini_figure(ev, "a").axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["S", "T", "random"]
    x, q = ev.curves[("T", "a")]
    np.testing.assert_array_equal(ax.get_lines()[1].get_ydata(), q)


def test_effect_model_predicts_what_its_learner_predicts(arms_data: pd.DataFrame) -> None:
    from omnicrm.uplift.config import EffectsSettings, UpliftConfig

    frame = arms_data.assign(seg=arms_data["segment"])
    cfg = UpliftConfig(
        name="t",
        source=TableSource(
            kind="table", path="t.csv", treatment="arm", control="ctrl", outcomes=["y"], features=["x0"]
        ),
        learners={"model": SMALL},
        effects=EffectsSettings(learner="X", outcome="y"),
    )
    features, categorical = ["x0", "x1", "seg"], ["seg"]
    make = learner_factory(cfg, "X", "ctrl", frame["y"].to_numpy())
    model = fit_effect_model(make, "X", frame, features, categorical, "y")
    assert isinstance(model, EffectModel) and model.actions == ["a", "b"]
    scoring = frame.iloc[::7].assign(extra="ignored").iloc[:, ::-1]  # other column order, an extra column
    got = model.predict_frame(scoring)
    assert list(got.columns) == ["effect_a", "effect_b"] and len(got) == len(scoring)
    from omnicrm.uplift.data import to_model_frame

    direct = make(0).fit(to_model_frame(frame, features, categorical), frame[ARM].to_numpy(dtype=object), frame["y"])
    np.testing.assert_allclose(got.to_numpy(), direct.predict_effect(to_model_frame(scoring, features, categorical)))
    with pytest.raises(InputError, match=r"lacks feature column\(s\) \['seg'\]"):
        model.predict_frame(scoring.drop(columns="seg"))


def test_qini_by_action_is_the_qini_of_each_actions_rows_and_the_controls() -> None:
    rng = np.random.default_rng(0)
    n = 600
    arm = rng.choice(np.array(["ctrl", "a", "b"], dtype=object), n)
    y = rng.random(n)
    effect = rng.normal(size=(n, 2))
    got = qini_by_action(effect, ["a", "b"], arm, y, "ctrl")
    sel = arm != "b"
    assert got["a"] == pytest.approx(M.qini_coefficient(y[sel], effect[sel, 0], arm[sel] == "a"))
    # an action without rows is left out
    assert set(qini_by_action(effect, ["a", "zzz"], arm, y, "ctrl")) == {"a"}


def test_table_data_checks_a_frame_and_names_the_configured_file() -> None:
    src = TableSource(kind="table", path="data/x.csv", treatment="t", control="none", outcomes=["y"], features=["f"])
    frame = pd.DataFrame({"t": ["none", "mail", "none"], "y": [0, 1, 0], "f": [1.0, 2.0, 3.0]})
    data = table_data(frame, src)
    assert list(data.frame.columns[:2]) == ["unit_id", "arm"] and data.actions == ["mail"]
    with pytest.raises(InputError, match=r"data/x.csv: missing column\(s\) \['f'\]"):
        table_data(frame.drop(columns="f"), src)
