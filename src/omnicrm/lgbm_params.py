"""LightGBM parameters from a config, checked before any work: known names, values LightGBM accepts.

LightGBM ignores a misspelt parameter with a warning at best (``num_leafs`` trains with the default
number of leaves), and rejects a bad value only when the fit starts, in its own words and without the
config key. :func:`check_lgbm_params` runs in config validation, so both are config errors naming
the key (exit 2) before a store is opened.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
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


def check_lgbm_params(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` unchanged if LightGBM knows every name and accepts every value; else a ``ValueError``.

    Values are checked by building a one-round model on four rows with them (a few milliseconds):
    what LightGBM refuses there it would refuse in the real fit.
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

    rounds = {"n_estimators", "num_iterations", "num_iteration", "n_iter", "num_tree", "num_trees", "num_round"}
    probe = {k: v for k, v in params.items() if k not in rounds | {"objective"}}
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
