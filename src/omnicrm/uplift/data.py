"""Training rows for uplift: one row per randomised unit with its arm, outcomes and features.

Two inputs, one output shape (:class:`UpliftData`):

* a **feature table** that already holds one row per unit, a treatment column, the outcomes and
  the features (e.g. Hillstrom's e-mail experiment): :func:`table_data` checks a frame the wiring
  read from the configured CSV or Parquet file;
* the **unified store**: one row per (customer, campaign) exposure from ``treatments``, features at
  the campaign's send time T (point-in-time: ``build_features`` reads only ``ts < T``), outcomes from
  ``events`` in ``[T, T + window_days)``: :func:`store_data` reads them through a connection the
  wiring opened.

Nothing here opens a file or a store: frames and connections come in, frames go out.

Store outcomes (names configs use): ``purchase`` (any purchase, 0/1), ``orders`` (distinct orders),
``spend`` (purchase amount), ``margin`` (purchase amount minus the quantity's unit cost,
``products.price - products.margin``, so a discount lowers the margin), ``visit`` (any visit, 0/1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from omnicrm.config import StrictModel
from omnicrm.errors import InputError

ARM = "arm"
UNIT = "unit_id"
STORE_OUTCOMES = ("purchase", "orders", "spend", "margin", "visit")


class TableSource(StrictModel):
    """A precomputed feature table with a treatment column (CSV or Parquet)."""

    kind: Literal["table"]
    path: str
    treatment: str
    control: str
    outcomes: list[str] = Field(min_length=1)
    features: list[str] = Field(min_length=1)
    categorical: list[str] = []
    id: str | None = None
    segment: str | None = None
    #: treatment values to keep (default: every value); map labels to shorter action names
    actions: dict[str, str] | None = None


class StoreSource(StrictModel):
    """Exposures of the unified store's ``treatments`` table, features at send time, outcomes after it."""

    kind: Literal["store"]
    store: str
    features: str | dict = "../features/default.yaml"
    window_days: int = Field(default=14, ge=1, le=365)
    outcomes: list[Literal["purchase", "orders", "spend", "margin", "visit"]] = ["purchase", "spend", "margin"]
    campaigns: list[str] | None = None
    #: features left out of the model (ids, the cutoff and any column a config wants dropped)
    exclude_features: list[str] = []
    #: a feature column to read the campaign out by (e.g. lifecycle_stage)
    segment: str | None = None


Source = Annotated[TableSource | StoreSource, Field(discriminator="kind")]


@dataclass
class UpliftData:
    """Rows of a randomised experiment.

    Attributes
    ----------
    frame
        One row per unit (and campaign): ``unit_id``, ``arm``, the outcome columns, the feature
        columns, ``campaign_id`` and ``cutoff`` for store data, and the segment column if any.
    features, categorical
        Model inputs (categorical ones have pandas ``category`` dtype in ``X``).
    outcomes
        Outcome columns.
    control
        Label of the control arm in ``arm``.
    group
        Column holding the unit's identity for grouped splits (a customer in several campaigns stays
        on one side of every split).
    """

    frame: pd.DataFrame
    features: list[str]
    categorical: list[str]
    outcomes: list[str]
    control: str
    segment: str | None = None
    group: str = UNIT

    @property
    def X(self) -> pd.DataFrame:
        """The model inputs: the feature columns, categoricals encoded (:func:`to_model_frame`)."""
        return to_model_frame(self.frame, self.features, self.categorical)

    @property
    def arms(self) -> np.ndarray:
        """Each row's arm: an action's name or the control's."""
        return self.frame[ARM].to_numpy(dtype=object)

    @property
    def actions(self) -> list[str]:
        """The actions (every arm but the control), sorted."""
        return sorted({a for a in self.arms.tolist() if a != self.control})


def to_model_frame(frame: pd.DataFrame, features: list[str], categorical: list[str]) -> pd.DataFrame:
    """Feature columns for the learners: categoricals as pandas ``category``, the rest float."""
    X = frame[features].copy()
    for c in features:
        X[c] = X[c].astype("category") if c in categorical else pd.to_numeric(X[c], errors="coerce").astype(float)
    return X.reset_index(drop=True)


# --- feature table ---------------------------------------------------------------------------------
def table_data(frame: pd.DataFrame, src: TableSource) -> UpliftData:
    """Rows of a feature table, checked against the columns ``src`` declares.

    Parameters
    ----------
    frame
        The table as read from ``src.path`` (errors name that path).
    src
        The table source: treatment column and control value, outcomes, features, optional id,
        segment and kept actions.

    Returns
    -------
    UpliftData
        The rows with ``unit_id`` and ``arm`` in front.

    Raises
    ------
    InputError
        A declared column is missing, a categorical column is not a feature, the treatment column
        has no control value, or an outcome has missing or non-numeric values.
    """
    declared = [src.treatment, *src.outcomes, *src.features] + [c for c in (src.id, src.segment) if c]
    missing = [c for c in dict.fromkeys(declared) if c not in frame.columns]
    if missing:
        raise InputError(f"{src.path}: missing column(s) {missing}; the table has {list(frame.columns)}")
    bad_cat = [c for c in src.categorical if c not in src.features]
    if bad_cat:
        raise InputError(f"{src.path}: categorical column(s) {bad_cat} are not among the features {src.features}")
    arm = frame[src.treatment].astype(str)
    if not (arm == src.control).any():
        raise InputError(
            f"{src.path}: column '{src.treatment}' has no control value {src.control!r}; "
            f"values: {sorted(arm.unique().tolist())}"
        )
    if src.actions is not None:
        keep = arm.isin([src.control, *src.actions])
        frame, arm = frame[keep], arm[keep].replace(src.actions)
    for c in src.outcomes:
        y = pd.to_numeric(frame[c], errors="coerce")
        if y.isna().any():
            n_bad = int(y.isna().sum())
            raise InputError(f"{src.path}: outcome column '{c}' has {n_bad} missing or non-numeric values")
    out = frame.reset_index(drop=True).copy()
    out.insert(0, ARM, arm.to_numpy())
    out.insert(0, UNIT, out[src.id].astype(str) if src.id else np.arange(len(out)).astype(str))
    return UpliftData(out, list(src.features), list(src.categorical), list(src.outcomes), src.control, src.segment)


# --- store -----------------------------------------------------------------------------------------
def campaign_sends(con, campaigns: list[str] | None) -> pd.DataFrame:  # noqa: ANN001 - a DuckDB connection
    """Each campaign's send time: its first exposure (messages go out over the following minutes)."""
    where = ""
    params: list = []
    if campaigns:
        where = f"where campaign_id in ({', '.join('?' for _ in campaigns)})"
        params = list(campaigns)
    sends = con.execute(
        f"select campaign_id, min(ts) as send_ts from treatments {where} group by 1 order by 2, 1", params
    ).df()
    if campaigns:
        unknown = sorted(set(campaigns) - set(sends["campaign_id"]))
        if unknown:
            raise InputError(f"treatments: unknown campaign(s) {unknown}")
    if sends.empty:
        raise InputError("treatments: the store holds no campaign exposures")
    return sends


def store_outcomes(con, sends: pd.DataFrame, window_days: int) -> pd.DataFrame:  # noqa: ANN001
    """One row per exposure: arm and the outcomes in ``[send, send + window)`` (DuckDB does the joins)."""
    con.register("__uplift_sends", sends)
    try:
        return con.execute(
            f"""
            with exp as (
                select t.customer_id, t.campaign_id, s.send_ts, t.channel,
                       case when t."group" = 'control' then 'control' else t.action end as arm
                from treatments t join __uplift_sends s using (campaign_id)
            ),
            ev as (
                select x.customer_id, x.campaign_id, e.event_type, e.order_id, e.amount,
                       e.amount - e.quantity * (p.price - p.margin) as margin_amount
                from exp x
                join events e on e.customer_id = x.customer_id
                 and e.ts >= x.send_ts and e.ts < x.send_ts + interval {int(window_days)} day
                 and e.event_type in ('purchase', 'visit')
                left join products p on p.product_id = e.product_id
            ),
            agg as (
                select customer_id, campaign_id,
                       max(case when event_type = 'purchase' then 1 else 0 end) as purchase,
                       count(distinct case when event_type = 'purchase' then order_id end) as orders,
                       coalesce(sum(case when event_type = 'purchase' then amount end), 0) as spend,
                       coalesce(sum(case when event_type = 'purchase' then coalesce(margin_amount, 0) end), 0)
                           as margin,
                       max(case when event_type = 'visit' then 1 else 0 end) as visit
                from ev group by 1, 2
            )
            select x.customer_id, x.campaign_id, x.send_ts, x.channel, x.arm,
                   coalesce(a.purchase, 0)::double as purchase, coalesce(a.orders, 0)::double as orders,
                   coalesce(a.spend, 0)::double as spend, coalesce(a.margin, 0)::double as margin,
                   coalesce(a.visit, 0)::double as visit
            from exp x left join agg a using (customer_id, campaign_id)
            order by x.campaign_id, x.customer_id
            """
        ).df()
    finally:
        con.unregister("__uplift_sends")


def store_features(con, cutoffs: list[datetime], feature_config) -> pd.DataFrame:  # noqa: ANN001
    """Point-in-time features at each distinct cutoff, ordered by cutoff and customer.

    One call for all of them: on the single-threaded (deterministic) store they run one per core,
    each with the bits of its own snapshot (:func:`omnicrm.features.build_features`).
    """
    from omnicrm.features import build_features

    return build_features(con, cutoffs, feature_config)


def model_features(frame: pd.DataFrame, exclude: list[str]) -> tuple[list[str], list[str]]:
    """Feature and categorical columns of a feature snapshot (everything but ids and the cutoff)."""
    skip = {"customer_id", "cutoff", *exclude}
    feats = [c for c in frame.columns if c not in skip]
    cats = [c for c in feats if not pd.api.types.is_numeric_dtype(frame[c])]
    return feats, cats


def store_data(con, src: StoreSource, feature_config) -> UpliftData:  # noqa: ANN001 - a DuckDB connection
    """Exposures with point-in-time features at send time and outcomes in the window after it.

    Parameters
    ----------
    con
        A connection to the store (the wiring opens it with ``deterministic=True``: features sum
        doubles, and a parallel sum adds them in whatever order threads finish).
    src
        The store source: campaigns, outcome window, excluded features, segment.
    feature_config
        The :class:`~omnicrm.features.config.FeatureConfig` of the snapshots.

    Returns
    -------
    UpliftData
        One row per exposure, ordered by campaign and customer.
    """
    sends = campaign_sends(con, src.campaigns)
    rows = store_outcomes(con, sends, src.window_days)
    cutoffs = [pd.Timestamp(t).to_pydatetime() for t in sends["send_ts"]]
    feats = store_features(con, cutoffs, feature_config)
    rows["cutoff"] = rows["send_ts"].astype("datetime64[us]")
    feats["cutoff"] = feats["cutoff"].astype("datetime64[us]")
    frame = rows.merge(feats, on=["customer_id", "cutoff"], how="left", validate="many_to_one")
    features, categorical = model_features(feats, src.exclude_features)
    frame.insert(0, UNIT, frame["customer_id"])
    if src.segment is not None and src.segment not in frame.columns:
        raise InputError(f"store source: segment column '{src.segment}' is not a feature column")
    return UpliftData(frame, features, categorical, list(src.outcomes), "control", src.segment)


def population_features(con, feature_config, as_of: datetime) -> pd.DataFrame:  # noqa: ANN001
    """Features of every customer in the store's population at ``as_of`` (reads only ts < as_of)."""
    return store_features(con, [as_of], feature_config)


def closed_before(frame: pd.DataFrame, window_days: int, as_of: datetime) -> np.ndarray:
    """Which exposures' outcome windows closed by ``as_of`` (send + window <= as_of).

    These are the rows a model fitted at ``as_of`` may learn from.
    """
    return (send_window_end(frame, window_days) <= pd.Timestamp(as_of)).to_numpy()


def send_window_end(frame: pd.DataFrame, window_days: int) -> pd.Series:
    """When each exposure's outcome window closes."""
    return frame["cutoff"] + timedelta(days=window_days)
