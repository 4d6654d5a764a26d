"""Rows of the cadence experiment and the customers to recommend for, read from the store.

Nothing here opens a store: the wiring passes a DuckDB connection. Every query reads the store's
tables as :mod:`omnicrm.schema` names them.

* :func:`experiment_rows`: one row per member of the randomised cadence experiment: the arm of their
  first experiment send, point-in-time features at the experiment's start ``T`` (reading ``ts < T``)
  and the outcomes in ``[T, T + window_days)``: ``margin`` (purchase amount minus the quantity's unit
  cost, as the uplift outcomes), ``orders``, ``opens`` (opens on the channel) and ``unsubscribed``
  (0/1: an opt-out event on the channel); ``beta_margin``, ``beta_orders`` and ``beta_opens``, the same
  over ``[T, T + beta_days)``, the weeks the arms differ.
* :func:`population`: every customer at ``as_of`` with features, consent on the channel (the
  customer's consent column and no opt-out event before ``as_of``) and the current cadence (sends on
  the channel in the 28 days before ``as_of``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from omnicrm.errors import InputError
from omnicrm.frequency.config import ExperimentSettings

#: the event type of a send and of an opt-out per channel (omnicrm.schema.EVENT_TYPES)
SEND_EVENT = {"email": "email_sent", "push": "push_sent"}
OPEN_EVENT = {"email": "email_open", "push": "push_open"}
OPTOUT_EVENT = {"email": "email_unsubscribe", "push": "push_optout"}
#: the window over which the current cadence is counted (a four-week cadence)
CADENCE_DAYS = 28
OUTCOMES = ("margin", "orders", "opens", "unsubscribed")
#: the same over the first ``beta_days`` (the weeks the arms differ), for the margin of an extra open
BETA_OUTCOMES = ("beta_margin", "beta_orders", "beta_opens")


@dataclass
class ExperimentRows:
    """The experiment's members.

    Attributes
    ----------
    frame
        ``customer_id``, ``arm`` (int), the outcomes and the feature columns.
    start
        The experiment's start (its first send, to the day).
    features, categorical
        Feature columns (model inputs) and those of them that are categorical.
    """

    frame: pd.DataFrame
    start: datetime
    features: list[str]
    categorical: list[str]


def _events(exp: ExperimentSettings) -> tuple[str, str, str]:
    ch = exp.channel
    if ch not in SEND_EVENT:
        raise InputError(f"frequency: no send/open/opt-out events are known for channel '{ch}'")
    return SEND_EVENT[ch], OPEN_EVENT[ch], OPTOUT_EVENT[ch]


def assignments(con, exp: ExperimentSettings) -> pd.DataFrame:  # noqa: ANN001 - a DuckDB connection
    """Each member's arm: the cadence coded in their first experiment send (``<prefix><arm>-...``)."""
    send, _, _ = _events(exp)
    prefix = exp.code_prefix
    frame = con.execute(
        """
        select customer_id, min(ts) as first_ts,
               try_cast(regexp_extract(arg_min(order_id, ts), '^' || ? || '([0-9]+)-', 1) as integer) as arm
        from events
        where event_type = ? and starts_with(order_id, ?)
        group by customer_id
        order by customer_id
        """,
        [prefix, send, prefix],
    ).df()
    if frame.empty:
        raise InputError(
            f"frequency: the store holds no {send} events with a code starting '{prefix}' (no cadence experiment)"
        )
    unknown = sorted(set(frame["arm"].dropna().astype(int)) - set(exp.arms))
    if unknown or frame["arm"].isna().any():
        raise InputError(f"frequency: experiment sends coded with arms {unknown or 'none'} outside {exp.arms}")
    frame["arm"] = frame["arm"].astype(int)
    return frame


def outcomes(con, members: pd.DataFrame, start: datetime, exp: ExperimentSettings) -> pd.DataFrame:  # noqa: ANN001
    """Outcomes of each member in ``[start, start + window_days)``, and ``beta_*`` in the first ``beta_days``.

    DuckDB does the joins; one pass over the window's events.
    """
    _, open_ev, optout = _events(exp)
    end = start + timedelta(days=exp.window_days)
    early = start + timedelta(days=exp.beta_days or exp.window_days)
    con.register("__freq_members", members[["customer_id"]])
    try:
        return con.execute(
            """
            with ev as (
                select e.customer_id, e.event_type, e.order_id, e.channel, e.ts < ? as early,
                       e.amount - e.quantity * (p.price - p.margin) as margin_amount
                from events e join __freq_members m using (customer_id)
                left join products p on p.product_id = e.product_id
                where e.ts >= ? and e.ts < ?
                  and e.event_type in ('purchase', ?, ?)
            )
            select m.customer_id,
                   coalesce(sum(case when event_type = 'purchase' then coalesce(margin_amount, 0) end), 0)::double
                       as margin,
                   count(distinct case when event_type = 'purchase' then order_id end)::double as orders,
                   count(case when event_type = ? then 1 end)::double as opens,
                   (count(case when event_type = ? then 1 end) > 0)::double as unsubscribed,
                   coalesce(sum(case when early and event_type = 'purchase' then coalesce(margin_amount, 0) end),
                            0)::double as beta_margin,
                   count(distinct case when early and event_type = 'purchase' then order_id end)::double
                       as beta_orders,
                   count(case when early and event_type = ? then 1 end)::double as beta_opens
            from __freq_members m left join ev using (customer_id)
            group by m.customer_id
            order by m.customer_id
            """,
            [early, start, end, open_ev, optout, open_ev, optout, open_ev],
        ).df()
    finally:
        con.unregister("__freq_members")


def model_features(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Feature and categorical columns of a feature snapshot (everything but the id and the cutoff)."""
    feats = [c for c in frame.columns if c not in ("customer_id", "cutoff")]
    cats = [c for c in feats if not pd.api.types.is_numeric_dtype(frame[c])]
    return feats, cats


def experiment_rows(con, exp: ExperimentSettings, feature_config, as_of: datetime) -> ExperimentRows:  # noqa: ANN001
    """The members with their arm, features at the start and outcomes over the window.

    Raises
    ------
    InputError
        No experiment in the store, or its outcome window has not closed by ``as_of``.
    """
    from omnicrm.features import build_features

    members = assignments(con, exp)
    start = pd.Timestamp(members["first_ts"].min()).floor("D").to_pydatetime()
    end = start + timedelta(days=exp.window_days)
    if end > as_of:
        raise InputError(
            f"frequency: the experiment started {start:%Y-%m-%d}; its {exp.window_days}-day outcome window "
            f"closes {end:%Y-%m-%d}, after --as-of {as_of:%Y-%m-%d}"
        )
    out = outcomes(con, members, start, exp)
    feats = build_features(con, [start], feature_config)
    features, categorical = model_features(feats)
    frame = members[["customer_id", "arm"]].merge(out, on="customer_id", how="left")
    frame = frame.merge(feats.drop(columns=["cutoff"]), on="customer_id", how="left")
    return ExperimentRows(frame.reset_index(drop=True), start, features, categorical)


def population(con, channel: str, feature_config, as_of: datetime) -> pd.DataFrame:  # noqa: ANN001
    """Every customer at ``as_of``: features, ``consent`` (bool) and ``current_cadence`` on ``channel``."""
    from omnicrm.features import build_features

    send = SEND_EVENT.get(channel)
    optout = OPTOUT_EVENT.get(channel)
    if send is None:
        raise InputError(f"frequency: no send/opt-out events are known for channel '{channel}'")
    feats = build_features(con, [as_of], feature_config)
    since = as_of - timedelta(days=CADENCE_DAYS)
    state = con.execute(
        f"""
        select c.customer_id,
               coalesce(c.consent_{channel}, false) and coalesce(o.n_optout, 0) = 0 as consent,
               coalesce(s.n_sent, 0)::double as current_cadence
        from customers c
        left join (select customer_id, count(*) as n_optout from events
                   where event_type = ? and ts < ? group by 1) o using (customer_id)
        left join (select customer_id, count(*) as n_sent from events
                   where event_type = ? and ts >= ? and ts < ? group by 1) s using (customer_id)
        """,
        [optout, as_of, send, since, as_of],
    ).df()
    frame = feats.drop(columns=["cutoff"]).merge(state, on="customer_id", how="left")
    frame["consent"] = frame["consent"].fillna(False).astype(bool)
    frame["current_cadence"] = frame["current_cadence"].fillna(0.0)
    return frame.reset_index(drop=True)


def nearest_arm(cadence: np.ndarray, arms: list[int]) -> np.ndarray:
    """The arm nearest each observed cadence on a log scale (0 sends maps to the lowest arm)."""
    a = np.asarray(sorted(arms), dtype=float)
    c = np.log(np.maximum(np.asarray(cadence, dtype=float), 0.5))
    return a[np.argmin(np.abs(c[:, None] - np.log(a)[None, :]), axis=1)].astype(int)
