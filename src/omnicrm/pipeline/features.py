"""``omnicrm features CONFIG --cutoff DATE ... --out FILE``: feature snapshots from the store.

One row per (customer, cutoff): the business's own keys first (as ``omnicrm predict`` writes them,
:mod:`omnicrm.pipeline.keys`), then ``customer_id``, ``cutoff`` and the features. The snapshots are
streamed a cutoff at a time as Arrow batches (:func:`omnicrm.features.feature_batches`), so memory is
that of one snapshot however many cutoffs are asked for. The output is written to a temporary file
beside ``--out`` and moved into place when complete, so a failed run never leaves a half-written
feature file (or destroys the previous one).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from omnicrm.config import StrictModel, load_config
from omnicrm.errors import ConfigError
from omnicrm.progress import Progress, silent


class FeaturesRunConfig(StrictModel):
    """Which store to read and which feature definitions to compute.

    ``features`` is a path to a feature config (relative to this file) or the settings inline.
    """

    store: str
    features: str | dict[str, Any] = {}


@dataclass
class FeaturesResult:
    out: Path
    rows: int
    columns: int
    cutoffs: list[date]
    customers_per_cutoff: dict[str, int]


def load_features_config(path: str | Path):  # noqa: ANN201 - returns (FeaturesRunConfig, FeatureConfig)
    from omnicrm.features.config import resolve_feature_config

    path = Path(path)
    run = load_config(FeaturesRunConfig, path)
    return run, resolve_feature_config(run.features, path.parent, f"{path} (key 'features')")


def run_features(
    config_path: str | Path, cutoffs: list[date] | list[datetime], out: Path, progress: Progress = silent
) -> FeaturesResult:
    """Build one row per (customer, cutoff) for every cutoff and write it to ``out`` (Parquet).

    Every cutoff is checked against the store's events first (:func:`omnicrm.store.check_date`):
    one on or before the first event, or far past the last, is an error before any work.
    """
    from omnicrm.features import feature_batches, feature_schema
    from omnicrm.features.cutoffs import normalize_cutoff
    from omnicrm.store import check_date, data_range, open_store
    from omnicrm.store.outputs import check_output_path
    from omnicrm.store.staging import staged

    if not cutoffs:
        raise ConfigError("features: at least one --cutoff is required (cutoffs are never derived from the data)")
    run, feats = load_features_config(config_path)
    out = check_output_path(out, what="output file")
    points = sorted(set(cutoffs))
    con = open_store(run.store)
    per: dict[str, int] = {}
    try:
        span = data_range(con)
        for cutoff in points:
            check_date(cutoff, span, "--cutoff")
        keys = _keys(con, feature_schema(feats).names)
        schema = pa.schema([*(pa.field(n, pa.string()) for n in keys.column_names[1:]), *feature_schema(feats)])
        with staged(out) as tmp, pq.ParquetWriter(str(tmp), schema) as writer:
            for i, cutoff in enumerate(points):
                progress(f"features at {cutoff:%Y-%m-%d}", i / len(points))
                rows = 0
                for batch in feature_batches(con, [cutoff], feats):
                    writer.write_batch(_with_keys(batch, keys, schema))
                    rows += batch.num_rows
                per[f"{normalize_cutoff(cutoff):%Y-%m-%d}"] = rows
    finally:
        con.close()
    progress("features written", 1.0)
    return FeaturesResult(out, sum(per.values()), len(schema), [normalize_cutoff(c).date() for c in points], per)


def _keys(con, taken: list[str]) -> pa.Table:  # noqa: ANN001 - a DuckDB connection
    """``customer_id`` and the business's key columns of every customer, as named in the output."""
    import duckdb

    from omnicrm.pipeline.keys import key_column_names, source_keys, store_meta

    ids = con.sql("SELECT customer_id::VARCHAR AS customer_id FROM customers ORDER BY customer_id").df()
    try:
        keys = source_keys(con, ids["customer_id"])
    except duckdb.CatalogException:  # a hand-built store without identity links: no business keys
        keys = ids
    sources = [c.removesuffix("_key") for c in keys.columns if c != "customer_id"]
    names = key_column_names(store_meta(con), sources, set(taken))
    keys = keys.rename(columns={f"{s}_key": n for s, n in names.items()})
    keys["customer_id"] = keys["customer_id"].astype(str)
    return pa.Table.from_pandas(keys[["customer_id", *names.values()]], preserve_index=False)


def _with_keys(batch: pa.RecordBatch, keys: pa.Table, schema: pa.Schema) -> pa.RecordBatch:
    """The batch with each row's business keys in front (missing for a customer without records there)."""
    at = pc.index_in(batch.column("customer_id"), value_set=keys.column("customer_id"))
    front = [keys.column(name).take(at).combine_chunks().cast(pa.string()) for name in keys.column_names[1:]]
    return pa.RecordBatch.from_arrays([*front, *batch.columns], schema=schema)
