"""LightGBM parameters from a config, checked before any work: known names, values LightGBM accepts.

LightGBM ignores a misspelt parameter with a warning at best (``num_leafs`` trains with the default
number of leaves), and rejects a bad value only when the fit starts, in its own words and without the
config key. :func:`check_lgbm_params` runs in config validation, so both are config errors naming
the key (exit 2) before a store is opened.

Parameters that refer to features by position (one value per feature, feature indices, files of
forced splits or bins) can only be checked against the model's features: :func:`check_feature_params`
does that just before the fit. LightGBM 4.7 checks some of them inside its multi-threaded tree
building, where a failed check cannot become an exception: a ``monotone_constraints`` list of the
wrong length ended the process (exit 134, nothing logged), and an ``interaction_constraints`` index
past the last feature corrupted the heap (``corrupted size vs. prev_size``, exit 134, or a segfault).
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any


@cache
def known_names() -> frozenset[str]:
    """Every name LightGBM takes: its core parameters with their aliases, and the scikit-learn wrapper's."""
    import lightgbm as lgb
    from lightgbm.basic import _ConfigAliases

    names = set(lgb.LGBMModel().get_params())
    for name, aliases in _ConfigAliases._get_all_param_aliases().items():  # noqa: SLF001 - no public list
        names.add(name)
        names.update(aliases)
    return frozenset(names)


@cache
def _sklearn_names() -> frozenset[str]:
    import lightgbm as lgb

    return frozenset(lgb.LGBMModel().get_params())


#: One value per feature, in the fit's column order (LightGBM's names; their aliases are read from it).
PER_FEATURE = (
    "monotone_constraints",
    "feature_contri",
    "cegb_penalty_feature_lazy",
    "cegb_penalty_feature_coupled",
    "max_bin_by_feature",
)
#: Lists of feature groups, each feature by its index in the fit's column order.
FEATURE_GROUPS = ("interaction_constraints",)
#: Lists of feature indices (LightGBM's ``categorical_feature``; the models take pandas categories).
FEATURE_INDICES = ("categorical_feature",)
#: Files LightGBM reads; forced splits and bins name features by index too. LightGBM ignores a
#: missing forced-splits file (or one that is not JSON) without a word.
FEATURE_FILES = ("forcedsplits_filename", "forcedbins_filename")


def feature_keys(params: dict[str, Any]) -> dict[str, str]:
    """The keys of ``params`` that refer to features by position, each with its LightGBM name."""
    from lightgbm.basic import _ConfigAliases

    found = {}
    for name in (*PER_FEATURE, *FEATURE_GROUPS, *FEATURE_INDICES, *FEATURE_FILES):
        for key in sorted(_ConfigAliases.get(name)):
            if key in params and params[key] is not None:
                found[key] = name
    return found


def check_lgbm_params(params: dict[str, Any], *, per_feature: bool = True) -> dict[str, Any]:
    """``params`` unchanged if LightGBM knows every name and accepts every value; else a ``ValueError``.

    Values are checked by building a one-round model on four rows with them (a few milliseconds):
    what LightGBM refuses there it would refuse in the real fit. Parameters that refer to features
    by position are checked for their shape here (lists of numbers, groups of indices, files that
    exist) and against the model's features before the fit (:func:`check_feature_params`);
    ``per_feature=False`` refuses them, for models whose feature sets differ from fit to fit.
    """
    if not params:
        return params
    unknown = sorted(set(params) - known_names())
    if unknown:
        hints = []
        for name in unknown:
            # the scikit-learn names the configs use first, then LightGBM's own names and aliases
            close = difflib.get_close_matches(name, sorted(_sklearn_names()), n=1) or difflib.get_close_matches(
                name, sorted(known_names()), n=1
            )
            hints.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise ValueError(f"unknown LightGBM parameter(s) {', '.join(hints)}")
    import lightgbm as lgb
    import numpy as np

    by_position = feature_keys(params)
    if by_position and not per_feature:
        raise ValueError(
            f"{', '.join(by_position)}: not supported for these models, whose learners fit on different"
            " feature sets (one per treatment or dose); LightGBM would apply them by position"
        )
    for key, name in by_position.items():
        _check_shape(key, name, params[key])
    rounds = {"n_estimators", "num_iterations", "num_iteration", "n_iter", "num_tree", "num_trees", "num_round"}
    # the probe has one feature: what refers to features by position is checked before the real fit
    probe = {k: v for k, v in params.items() if k not in rounds | {"objective"} | set(by_position)}
    if not {"verbose", "verbosity"} & set(probe):
        probe["verbose"] = -1
    try:
        with _stderr_dropped():  # LightGBM's C++ side prints its refusal too; the error below says it once
            lgb.LGBMRegressor(n_estimators=1, **probe).fit(
                np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0.0, 1.0, 0.0, 1.0])
            )
    except (lgb.basic.LightGBMError, ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0].split(" at /")[0].strip()
        raise ValueError(f"LightGBM refuses {params}: {reason}") from None
    return params


def _values(value: Any) -> list[Any]:
    """A per-feature parameter as a list: LightGBM also takes its own spelling, ``"1,0,-1"``."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _as_int(value: Any) -> Any:
    """``"3"`` (LightGBM's comma-separated spelling) as 3; anything else unchanged."""
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


def _index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_shape(key: str, name: str, value: Any) -> None:
    if name in PER_FEATURE:
        bad = [v for v in _values(value) if not _number(v)]
        if bad:
            raise ValueError(f"{key}: one number per feature, in the model's feature order; not numbers: {bad}")
    elif name in FEATURE_GROUPS:
        if not isinstance(value, (list, tuple)) or not all(isinstance(g, (list, tuple)) for g in value):
            raise ValueError(f"{key}: a list of feature groups, each a list of feature indices, e.g. [[0, 1], [2]]")
        bad = [v for g in value for v in g if not _index(v)]
        if bad:
            # LightGBM 4.7 reads every entry as a number: a feature name would silently become another feature
            raise ValueError(f"{key}: feature indices (0 = the model's first feature) only; not indices: {bad}")
    elif name in FEATURE_INDICES:
        bad = [v for v in _values(value) if not _index(_as_int(v))]
        if bad:
            raise ValueError(f"{key}: feature indices (0 = the model's first feature) only; not indices: {bad}")
    elif not isinstance(value, (str, os.PathLike)) or not Path(value).is_file():
        raise ValueError(f"{key}: no file {str(value)!r} (read relative to the working directory {os.getcwd()})")
    else:  # LightGBM ignores a forced-splits file that is not JSON without a word
        _forced_features(key, name, value)


def _forced_features(key: str, name: str, path: Any) -> list[Any]:
    """The feature indices a forced-splits or forced-bins file names; ``ValueError`` if it is not such a file."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{key}: {str(path)!r} is not a JSON file ({exc})") from None
    if name == "forcedsplits_filename":
        if not isinstance(data, dict):
            raise ValueError(
                f"{key}: {str(path)!r} must hold one JSON object (a split, with 'feature' and 'threshold')"
            )
        found, todo = [], [data]
        while todo:
            split = todo.pop()
            if isinstance(split, dict) and split:
                found.append(split.get("feature"))
                todo += [split.get("left"), split.get("right")]
        return found
    if not isinstance(data, list) or not all(isinstance(b, dict) for b in data):
        raise ValueError(f"{key}: {str(path)!r} must hold a JSON list of {{'feature', 'bin_upper_bound'}} objects")
    return [b.get("feature") for b in data]


def check_feature_params(params: dict[str, Any], columns: list[str], categorical: set[str], where: str) -> None:
    """The parameters that refer to features by position, checked against the model's features.

    Runs just before the fit, when the feature columns are known (constant columns are dropped by
    then, so positions are those of ``columns``).

    Parameters
    ----------
    params
        The fit's LightGBM parameters (their shapes already checked by :func:`check_lgbm_params`).
    columns
        The model's feature columns in fit order.
    categorical
        Those of ``columns`` LightGBM treats as categorical.
    where
        The config key the parameters came from, for the messages (``model.params``).

    Raises
    ------
    InputError
        Naming the key, the number of features and their order, or the features in question.
    """
    from omnicrm.errors import InputError

    order = ", ".join(f"{i} {c}" for i, c in enumerate(columns))
    keys = feature_keys(params)
    categorical = set(categorical)
    for key, name in keys.items():  # features made categorical by index count as categorical below
        if name in FEATURE_INDICES:
            indices = [_as_int(v) for v in _values(params[key])]
            _within(indices, columns, f"{where}.{key}")
            categorical |= {columns[i] for i in indices if isinstance(i, int)}
    for key, name in keys.items():
        value = params[key]
        if name in PER_FEATURE:
            values = _values(value)
            if len(values) != len(columns):
                raise InputError(
                    f"{where}.{key}: {len(values)} value(s) for the model's {len(columns)} features; give one"
                    f" per feature in the model's feature order: {', '.join(columns)}"
                )
            if name == "monotone_constraints":
                constrained = [c for c, v in zip(columns, values, strict=True) if c in categorical and _nonzero(v)]
                if constrained:
                    raise InputError(
                        f"{where}.{key}: LightGBM cannot constrain categorical feature(s) {', '.join(constrained)};"
                        " give 0 for them"
                    )
        elif name in FEATURE_FILES:
            bad = [f for f in _forced_features(key, name, value) if not _index(f) or f >= len(columns)]
            if bad:
                raise InputError(
                    f"{where}.{key}: {str(value)!r} names feature(s) {bad}, not indices of the model's"
                    f" {len(columns)} features (0 to {len(columns) - 1}): {order}"
                )
        elif name in FEATURE_GROUPS:
            _within([v for g in value for v in g], columns, f"{where}.{key}")


def _within(indices: list[Any], columns: list[str], key: str) -> None:
    """``InputError`` naming ``key`` if an index is past the last of ``columns``."""
    from omnicrm.errors import InputError

    out = sorted({i for i in indices if isinstance(i, int) and i >= len(columns)})
    if out:
        order = ", ".join(f"{i} {c}" for i, c in enumerate(columns))
        raise InputError(
            f"{key}: feature index(es) {out} past the model's {len(columns)} features"
            f" (0 to {len(columns) - 1}): {order}"
        )


def _nonzero(value: Any) -> bool:
    try:
        return float(value) != 0
    except (TypeError, ValueError):
        return True


@contextmanager
def _stderr_dropped() -> Iterator[None]:
    """File descriptor 2 points at /dev/null for the block (what native code prints there is dropped)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
