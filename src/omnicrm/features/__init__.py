"""Point-in-time features: one row per (customer_id, cutoff) from store rows with ``ts < cutoff``.

Public API::

    from omnicrm.features import FeatureConfig, build_features, feature_sql

    frame = build_features(con, [datetime(2024, 7, 1)], FeatureConfig())

Modules: :mod:`~omnicrm.features.config` (settings), :mod:`~omnicrm.features.cutoffs` (cutoff
dates and the time-split config type), :mod:`~omnicrm.features.sql` (SQL building blocks),
:mod:`~omnicrm.features.sources` (aggregate CTEs), :mod:`~omnicrm.features.definitions`
(behavioural groups), :mod:`~omnicrm.features.lifecycle` (lifecycle stage, RFM segment),
:mod:`~omnicrm.features.snapshot` (assembly and execution on DuckDB), :mod:`~omnicrm.features.spark`
(the same SQL on Spark; needs the ``spark`` extra, not imported here).
"""

from omnicrm.features.config import FEATURE_GROUPS, FeatureConfig
from omnicrm.features.lifecycle import LIFECYCLE_STAGES, RFM_SEGMENTS
from omnicrm.features.snapshot import (
    build_features,
    feature_batches,
    feature_dtypes,
    feature_schema,
    feature_sql,
    write_features,
)

__all__ = [
    "FEATURE_GROUPS",
    "LIFECYCLE_STAGES",
    "RFM_SEGMENTS",
    "FeatureConfig",
    "build_features",
    "feature_batches",
    "feature_dtypes",
    "feature_schema",
    "feature_sql",
    "write_features",
]
