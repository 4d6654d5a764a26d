"""Settings that make fitted models reproducible to the last bit, written once for every LightGBM.

Tasks, uplift learners and the hybrid recommender all fit LightGBM. Each takes these settings, so
the same data, parameters and seed give the same model whatever the machine's load:

* ``deterministic`` and ``force_row_wise``: LightGBM's documented pair for run-to-run identical
  trees (the column-wise histogram path picks its layout by timing).
* ``n_jobs=1``: with two threads, the order in which partial sums are added depended on the load,
  and measured Online Retail CLV models differed (140 vs 381 trees). One thread was also 4x faster
  than two for the small uplift frames on a busy 2-core machine. A caller may still set ``n_jobs``
  where it is a tuned hyper-parameter (the hybrid's ranker).
* ``verbose=-1``: no per-fit chatter in logs.

Store reads that feed the models use one DuckDB thread for the same reason
(``open_store(..., deterministic=True)``).
"""

from __future__ import annotations

from typing import Any, Final

LIGHTGBM: Final[dict[str, Any]] = {
    "deterministic": True,
    "force_row_wise": True,
    "n_jobs": 1,
    "verbose": -1,
}
