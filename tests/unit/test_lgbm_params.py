"""LightGBM parameters from configs: refused with the key named, before a fit that would abort the process."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from omnicrm.errors import InputError
from omnicrm.frequency.config import EstimatorSettings
from omnicrm.lgbm_params import check_feature_params, check_lgbm_params
from omnicrm.uplift.config import LearnerSettings

COLUMNS = ["recency_days", "top_category", "orders_90d"]
CATEGORICAL = {"top_category"}


def test_unknown_names_and_refused_values_are_config_errors() -> None:
    with pytest.raises(ValueError, match=r"'num_leafs' \(did you mean 'num_leaves'\?\)"):
        check_lgbm_params({"num_leafs": 15})
    with pytest.raises(ValueError, match="LightGBM refuses"):
        check_lgbm_params({"num_leaves": 1})
    assert check_lgbm_params({"num_leaves": 15}) == {"num_leaves": 15}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        # LightGBM 4.7 reads every entry as a number: a name would silently constrain another feature
        (
            {"interaction_constraints": [["recency_days", "orders_90d"]]},
            r"feature indices .* only; not indices: \['recency_days'",
        ),
        ({"interaction_constraints": [[0, -1]]}, r"not indices: \[-1\]"),
        ({"interaction_constraints": [0, 1]}, "a list of feature groups"),
        ({"feature_contri": [1.0, "high", 1.0]}, r"one number per feature.*not numbers: \['high'\]"),
        ({"mc": "1,x,0"}, r"mc: one number per feature.*\['x'\]"),
        ({"forcedsplits_filename": "no/such/splits.json"}, "forcedsplits_filename: no file 'no/such/splits.json'"),
    ],
)
def test_the_shape_of_parameters_by_feature_position_is_checked_with_the_config(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_lgbm_params(params)


def test_parameters_by_feature_position_pass_the_config_check_and_are_checked_at_the_fit(tmp_path: Path) -> None:
    # the config's probe has one feature: an index or a length for the model's features is not refused there
    splits = tmp_path / "splits.json"
    splits.write_text('{"feature": 2, "threshold": 1.5}')
    params = {
        "interaction_constraints": [[0, 2], [40]],
        "monotone_constraints": [1, 0, -1],
        "forcedsplits_filename": str(splits),
    }
    assert check_lgbm_params(params) == params
    with pytest.raises(
        InputError,
        match=r"model\.params\.interaction_constraints: feature index\(es\) \[40\] past"
        r" the model's 3 features \(0 to 2\): 0 recency_days, 1 top_category, 2 orders_90d",
    ):
        check_feature_params(params, COLUMNS, CATEGORICAL, "model.params")
    check_feature_params({**params, "interaction_constraints": [[0, 2], [1]]}, COLUMNS, CATEGORICAL, "model.params")


def test_forced_split_and_bin_files_must_be_json_naming_the_models_features(tmp_path: Path) -> None:
    # LightGBM trained without a word on a forced-splits file that is not JSON, and refused one
    # naming feature 99 only in its own words, once the fit started
    bad = tmp_path / "bad.json"
    bad.write_text("not json {")
    with pytest.raises(ValueError, match="forcedsplits_filename: '.*bad.json' is not a JSON file"):
        check_lgbm_params({"forcedsplits_filename": str(bad)})
    with pytest.raises(ValueError, match="forcedbins_filename: '.*bad.json' is not a JSON file"):
        check_lgbm_params({"forcedbins_filename": str(bad)})
    splits = tmp_path / "splits.json"
    splits.write_text('{"feature": 0, "threshold": 1, "left": {"feature": 99, "threshold": 2}}')
    bins = tmp_path / "bins.json"
    bins.write_text('[{"feature": 2, "bin_upper_bound": [0.5, 1.5]}]')
    params = {"forcedsplits_filename": str(splits), "forcedbins_filename": str(bins)}
    assert check_lgbm_params(params) == params
    with pytest.raises(InputError, match=r"forcedsplits_filename: '.*splits.json' names feature\(s\) \[99\]"):
        check_feature_params(params, COLUMNS, CATEGORICAL, "model.params")
    splits.write_text('{"feature": 0, "threshold": 1, "left": {"feature": 2, "threshold": 2}}')
    check_feature_params(params, COLUMNS, CATEGORICAL, "model.params")


@pytest.mark.parametrize(
    "key",
    [
        "feature_contri",
        "feature_penalty",
        "cegb_penalty_feature_lazy",
        "cegb_penalty_feature_coupled",
        "max_bin_by_feature",
    ],
)
def test_one_value_per_feature_means_as_many_values_as_the_model_has_features(key: str) -> None:
    with pytest.raises(
        InputError, match=rf"model\.params\.{key}: 2 value\(s\) for the model's 3 features.*recency_days, top_category"
    ):
        check_feature_params({key: [1, 1]}, COLUMNS, CATEGORICAL, "model.params")
    check_feature_params({key: [1, 1, 1]}, COLUMNS, CATEGORICAL, "model.params")


def test_learners_on_different_feature_sets_refuse_parameters_by_feature_position() -> None:
    """The S-learner adds the treatment and the cadence models the dose as a feature: a per-feature list
    cannot mean the same features for every learner, and the dose learner sets its own constraint."""
    with pytest.raises(ValidationError, match="monotone_constraints: not supported for these models"):
        LearnerSettings(model={"monotone_constraints": [1, 0]})
    with pytest.raises(ValidationError, match=r"'model': interaction_constraints: not supported"):
        EstimatorSettings(model={"interaction_constraints": [[0, 1]]})
    assert LearnerSettings(model={"num_leaves": 7}).model == {"num_leaves": 7}


def test_features_made_categorical_by_index_cannot_be_constrained_and_must_exist() -> None:
    # categorical_feature: [0] with a monotone constraint on feature 0 passed every check, then
    # LightGBM 4.7 ended the process ("The output cannot be monotone with respect to categorical
    # features", exit 134)
    for params in (
        {"categorical_feature": [0], "monotone_constraints": [1, 0, 0]},
        {"cat_feature": "0", "mc": "1,0,0"},
    ):
        assert check_lgbm_params(params) == params
        with pytest.raises(InputError, match=r"cannot constrain categorical feature\(s\) recency_days"):
            check_feature_params(params, COLUMNS, set(), "model.params")
    with pytest.raises(InputError, match=r"categorical_feature: feature index\(es\) \[9\] past the model's 3"):
        check_feature_params({"categorical_feature": [0, 9]}, COLUMNS, set(), "model.params")
    with pytest.raises(ValueError, match=r"categorical_feature: feature indices .* not indices: \['name:a'\]"):
        check_lgbm_params({"categorical_feature": "name:a"})
    with pytest.raises(ValidationError, match="categorical_feature: not supported for these models"):
        LearnerSettings(model={"categorical_feature": [0]})


def test_a_task_with_an_extra_model_on_other_columns_refuses_parameters_by_feature_position(tmp_path: Path) -> None:
    # next_purchase's timing model puts its time bin first: [1, 0, ...] cannot mean the same
    # features for both of its models (the second fit failed, or shifted the constraints silently)
    import yaml

    from omnicrm.errors import ConfigError
    from omnicrm.tasks.config import load_task_config

    def config(kind: str, task: dict) -> Path:
        path = tmp_path / f"{kind}.yaml"
        data = {
            "name": kind,
            "dataset": {"name": "shop", "store": "x.duckdb"},
            "task": {"kind": kind, **task},
            "cutoffs": {
                "train": {"start": "2023-05-01", "end": "2023-08-01", "every": "month"},
                "validation": "2023-12-01",
                "evaluation": "2024-04-01",
            },
            "model": {"params": {"interaction_constraints": [[0, 1]]}},
        }
        path.write_text(yaml.safe_dump(data))
        return path

    with pytest.raises(ConfigError, match="interaction_constraints refer to features by position.*next_purchase"):
        load_task_config(config("next_purchase", {"horizon_days": 30}))
    assert load_task_config(config("churn", {"horizon_days": 30})).model.params == {"interaction_constraints": [[0, 1]]}
