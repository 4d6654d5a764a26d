"""The synthetic world's true effects, aligned with uplift rows (reported against, never trained on).

The generator knows each person's true effect of every action in every campaign
(``truth/treatment_effects.parquet``) and which source records each person owns
(``truth/record_owner.parquet``). The store knows which customer each source record became
(``identity_links``). Joining the three maps the truth onto the uplift rows, which are keyed by
customer and campaign; a customer formed from several people gets their mean effect, and a row
whose customer no person maps to gets NaN.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from omnicrm.errors import InputError

#: columns each input must hold
TRUTH_COLUMNS = ("person_id", "campaign_id")
OWNER_COLUMNS = ("source", "record_key", "person_id")
LINK_COLUMNS = ("source", "source_record_id", "customer_id")


def _require(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"{what}: missing column(s) {missing}; it has {list(frame.columns)}")


def person_customers(record_owner: pd.DataFrame, links: pd.DataFrame) -> pd.DataFrame:
    """Distinct ``(person_id, customer_id)`` pairs: the records a person owns, and the customers they became.

    Parameters
    ----------
    record_owner
        ``source``, ``record_key``, ``person_id``: the owner of each raw source record.
    links
        The store's ``identity_links`` (``source``, ``source_record_id``, ``customer_id``).

    Returns
    -------
    pandas.DataFrame
        ``person_id``, ``customer_id``; records without a link (quarantined rows) drop out.
    """
    _require(record_owner, OWNER_COLUMNS, "record owner table")
    _require(links, LINK_COLUMNS, "identity_links")
    owner = record_owner[list(OWNER_COLUMNS)].dropna(subset=["source", "record_key"])
    link = links[list(LINK_COLUMNS)].dropna(subset=["source", "source_record_id"])
    pairs = owner.merge(link, left_on=["source", "record_key"], right_on=["source", "source_record_id"])
    return pairs[["person_id", "customer_id"]].drop_duplicates().reset_index(drop=True)


def true_effects(
    truth: pd.DataFrame,
    record_owner: pd.DataFrame,
    links: pd.DataFrame,
    rows: pd.DataFrame,
    extra: tuple[str, ...] = (),
) -> pd.DataFrame:
    """The true effect of each action for each uplift row.

    Parameters
    ----------
    truth
        Per (``person_id``, ``campaign_id``): one ``effect_<action>`` column per action.
    record_owner, links
        See :func:`person_customers`.
    rows
        The uplift rows (``customer_id``, ``campaign_id``), in the order the effects are wanted.
    extra
        Further numeric columns of ``truth`` to align the same way (e.g. ``baseline_p``).

    Returns
    -------
    pandas.DataFrame
        One row per row of ``rows`` (same order, fresh index) and one column per action (named
        without the ``effect_`` prefix), then the ``extra`` columns; NaN where the row's customer has
        no truth.
    """
    _require(truth, TRUTH_COLUMNS + tuple(extra), "true effects table")
    _require(rows, ("customer_id", "campaign_id"), "uplift rows")
    effect_cols = [c for c in truth.columns if c.startswith("effect_")]
    if not effect_cols:
        raise InputError(f"true effects table: no effect_<action> column; it has {list(truth.columns)}")
    cols = effect_cols + list(extra)
    merged = truth.merge(person_customers(record_owner, links), on="person_id")
    per = merged.groupby(["customer_id", "campaign_id"], as_index=False)[cols].mean()
    aligned = rows[["customer_id", "campaign_id"]].merge(per, on=["customer_id", "campaign_id"], how="left")
    return aligned[cols].rename(columns=lambda c: c.removeprefix("effect_"))


def window_purchase_change(baseline_p: np.ndarray, effect: np.ndarray, weeks: int) -> tuple[np.ndarray, np.ndarray]:
    """The generator's weekly effect turned into the change of "bought within ``weeks`` weeks".

    The generator adds an action's effect to the person's weekly purchase probability for
    ``EFFECT_WEEKS`` weeks (``omnicrm.synthetic.campaigns``), clipped to [0, 1]. Over a window of
    ``weeks`` weeks the probability of at least one purchase is ``1 - (1 - p)^weeks``, so

        P(buy | action)    = 1 - (1 - clip(baseline_p + effect))^weeks
        change             = (1 - baseline_p)^weeks - (1 - clip(baseline_p + effect))^weeks

    Approximate where another campaign's effect overlaps the window, the season changes between
    the two weeks, or the person churns within them; exact otherwise.

    Returns
    -------
    tuple of numpy.ndarray
        ``(change, p_buy)`` with the shape of ``effect`` (``baseline_p`` broadcasts over its columns).
    """
    base = np.clip(np.asarray(baseline_p, dtype=float), 0.0, 1.0)
    if np.ndim(effect) == 2 and np.ndim(base) == 1:
        base = base[:, None]
    treated = np.clip(base + np.asarray(effect, dtype=float), 0.0, 1.0)
    p_buy = 1.0 - (1.0 - treated) ** weeks
    return (1.0 - base) ** weeks - (1.0 - treated) ** weeks, p_buy
