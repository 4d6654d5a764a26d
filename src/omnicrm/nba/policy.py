"""Engagement rules and the contact policy, from features and the store's history before ``as_of``.

Candidates are every (customer, action, channel) of the catalogue for every customer of the
population. They are dropped, each with one reason row (the ``excluded`` output table: customer_id,
step, reason, plus the action and channel), in this order:

1. ``eligibility``, ``applicability``, ``suitability``: the catalogue's rules over the customer's
   feature columns (the first rule that is not true is the reason; a rule over a null value is not
   true);
2. ``quiet``: a service contact in the ``quiet_days_after_service`` days before ``as_of``;
3. ``consent``: no consent to the channel in ``customers`` (null is no consent);
4. ``suppression``: the channel is suppressed (below);
5. ``cap``: a contact cap of the channel is reached counting the history.

A contact in the history is a send to the treatment group of a campaign (``treatments``) or a
marketing send in ``events`` (``email_sent`` -> e-mail, ``push_sent`` -> push); the same customer,
channel and timestamp in both count once. A cap ``{channel, max, days}`` counts contacts in
``[as_of - days, as_of)``: a channel cap that is reached drops the channel; a cap over ``any``
channel leaves the customer ``max - count`` contacts (their ``slots``, also limited by
``allocation.per_customer``), and none drops all their candidates. Suppression
``{channel, sends: N, days: D, suppress_days: S}``: the channel is suppressed at ``as_of`` when a
send on it in ``[as_of - S, as_of)`` was the N-th or later send in the D days up to it and the
customer opened nothing on that channel from D days before that send until ``as_of``. Every query
reads ``ts < as_of`` only.

The learned cadence (``policy.cadence``, from ``omnicrm frequency``): a customer whose contacts on the
channel in ``[as_of - days, as_of)`` reach their recommended cadence may not be contacted on it (step
``cap``, reason ``learned cadence``); ``under`` keeps the static caps as well, ``instead`` drops the
static caps of that channel for the customers the table has a cadence for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from omnicrm.nba.catalogue import Catalogue
from omnicrm.sql import ident, literal, ts_literal

__all__ = ["Candidates", "PolicyState", "apply_policy", "apply_rules", "contact_history", "contact_policy"]

#: marketing sends and opens in ``events``: event type -> channel
SEND_EVENTS = {"email_sent": "email", "push_sent": "push"}
OPEN_EVENTS = {"email_open": "email", "push_open": "push"}
KEY = ["customer_id", "action", "channel"]


@dataclass
class Candidates:
    """Kept candidates (customer_id, action, channel) and the excluded rows (customer_id, step, reason, ...)."""

    kept: pd.DataFrame
    excluded: pd.DataFrame


def _excluded(frame: pd.DataFrame, step: str, reason: pd.Series | str) -> pd.DataFrame:
    out = frame[KEY].copy()
    out.insert(1, "step", step)
    out.insert(2, "reason", reason if isinstance(reason, str) else reason.to_numpy())
    return out[["customer_id", "step", "reason", "action", "channel"]]


def _empty_excluded() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in ["customer_id", "step", "reason", "action", "channel"]})


def all_candidates(customers: pd.Series, cat: Catalogue) -> pd.DataFrame:
    """Every (customer, action, channel) of the catalogue for ``customers``, customers in input order."""
    pairs = [(a, c) for a, spec in cat.actions.items() for c in spec.channels]
    ids = np.asarray(customers, dtype=object)
    return pd.DataFrame(
        {
            "customer_id": np.repeat(ids, len(pairs)),
            "action": np.tile(np.asarray([a for a, _ in pairs], dtype=object), len(ids)),
            "channel": np.tile(np.asarray([c for _, c in pairs], dtype=object), len(ids)),
        }
    )


def apply_rules(features: pd.DataFrame, cat: Catalogue, con) -> Candidates:  # noqa: ANN001 - a DuckDB connection
    """Every candidate of the customers in ``features``, with those failing a rule excluded.

    The rules (compiled by :func:`~omnicrm.nba.catalogue.load_catalogue`) run as DuckDB SQL over
    ``features`` (one row per customer); ``con`` is any DuckDB connection (nothing is read from it).
    """
    cands = all_candidates(features["customer_id"], cat)
    failed = pd.Series(pd.NA, index=cands.index, dtype=object)
    kind = pd.Series(pd.NA, index=cands.index, dtype=object)
    con.register("_nba_features", features)
    try:
        for action in cat.actions:
            rules = cat.compiled_rules(action)
            if not rules:
                continue
            cols = ", ".join(f"coalesce(({r.sql}), false) AS r{i}" for i, r in enumerate(rules))
            ok = con.execute(f"SELECT customer_id, {cols} FROM _nba_features").df().set_index("customer_id")
            # the first rule a customer fails is the reason
            first = np.full(len(ok), -1)
            for i in reversed(range(len(rules))):
                first = np.where(~ok[f"r{i}"].to_numpy(bool), i, first)
            why = pd.Series(first, index=ok.index)
            rows = cands["action"] == action
            idx = why.reindex(cands.loc[rows, "customer_id"]).to_numpy()
            hit = idx >= 0
            where = cands.index[rows][hit]
            failed[where] = [f"{rules[j].kind}.{rules[j].name}: {rules[j].text}" for j in idx[hit]]
            kind[where] = [rules[j].kind for j in idx[hit]]
    finally:
        con.unregister("_nba_features")
    drop = failed.notna().to_numpy()
    parts = [
        _excluded(
            cands[drop & (kind == k).fillna(False).to_numpy()], k, failed[drop & (kind == k).fillna(False).to_numpy()]
        )
        for k in ("eligibility", "applicability", "suitability")
    ]
    excluded = pd.concat([_empty_excluded(), *parts], ignore_index=True)
    return Candidates(cands[~drop].reset_index(drop=True), excluded)


def contact_history(as_of: datetime) -> str:
    """SQL of the contacts before ``as_of``: ``customer_id, channel, ts`` (see the module docstring)."""
    t = ts_literal(as_of)
    sends = " ".join(f"WHEN '{e}' THEN '{c}'" for e, c in SEND_EVENTS.items())
    types = ", ".join(f"'{e}'" for e in SEND_EVENTS)
    return (
        "SELECT DISTINCT customer_id, channel, ts FROM ("
        f"SELECT customer_id, channel, ts FROM treatments WHERE \"group\" = 'treatment' AND ts < {t} "
        f"UNION ALL SELECT customer_id, CASE event_type {sends} END AS channel, ts FROM events "
        f"WHERE event_type IN ({types}) AND ts < {t})"
    )


def _opens(as_of: datetime) -> str:
    t = ts_literal(as_of)
    cases = " ".join(f"WHEN '{e}' THEN '{c}'" for e, c in OPEN_EVENTS.items())
    types = ", ".join(f"'{e}'" for e in OPEN_EVENTS)
    return (
        f"SELECT customer_id, CASE event_type {cases} END AS channel, ts FROM events "
        f"WHERE event_type IN ({types}) AND ts < {t}"
    )


@dataclass
class PolicyState:
    """The contact policy of each customer at ``as_of``.

    Attributes
    ----------
    blocked
        ``customer_id, channel, step, reason``: channels a customer may not be contacted on
        (``consent``, ``suppression``, ``cap``), one row per (customer, channel), the first reason.
    quiet
        ``customer_id, reason``: customers in a quiet period (no channel at all).
    slots
        ``customer_id -> contacts left`` under the caps over all channels (customers absent: no such cap).
    """

    blocked: pd.DataFrame
    quiet: pd.DataFrame
    slots: pd.Series


def contact_policy(
    con,  # noqa: ANN001 - a DuckDB connection
    customers: pd.Series,
    cat: Catalogue,
    as_of: datetime,
    cadences: pd.DataFrame | None = None,
) -> PolicyState:
    """Consent, suppression, caps, learned cadences and quiet periods of ``customers`` from the store behind ``con``.

    ``cadences`` (``customer_id, recommended_cadence``) are the learned cadences when ``policy.cadence`` is
    set; ``None`` takes the table the catalogue loaded.
    """
    ids = pd.DataFrame({"customer_id": pd.Series(customers, dtype=object).drop_duplicates()})
    t = ts_literal(as_of)
    learned = cat.policy.cadence
    if learned is not None and cadences is None:
        cadences = cat.learned_cadences()
    con.register("_nba_ids", ids)
    try:
        parts = []
        for ch in cat.channels:
            col = ident(cat.consent_column(ch))
            parts.append(
                con.execute(
                    f"SELECT i.customer_id FROM _nba_ids i LEFT JOIN customers c USING (customer_id) "
                    f"WHERE c.{col} IS NOT TRUE"
                )
                .df()
                .assign(channel=ch, step="consent", reason=f"no consent to {ch}")
            )
        history = contact_history(as_of)
        for rule in cat.policy.suppression:
            parts.append(
                con.execute(
                    f"WITH h AS ({history}), o AS ({_opens(as_of)}) "
                    "SELECT DISTINCT s.customer_id "
                    f"FROM h s JOIN _nba_ids USING (customer_id) "
                    f"WHERE s.channel = {literal(rule.channel)} AND s.ts >= {t} - INTERVAL {rule.suppress_days} DAY "
                    f"AND (SELECT count(*) FROM h c WHERE c.customer_id = s.customer_id AND c.channel = s.channel "
                    f"AND c.ts > s.ts - INTERVAL {rule.days} DAY AND c.ts <= s.ts) >= {rule.sends} "
                    f"AND NOT EXISTS (SELECT 1 FROM o WHERE o.customer_id = s.customer_id AND o.channel = s.channel "
                    f"AND o.ts > s.ts - INTERVAL {rule.days} DAY)"
                )
                .df()
                .assign(
                    channel=rule.channel,
                    step="suppression",
                    reason=f"{rule.sends} {rule.channel} sends without an open in {rule.days} days: "
                    f"suppressed {rule.suppress_days} days",
                )
            )
        slots = pd.Series(dtype="int64")
        for cap in cat.policy.caps:
            on = "" if cap.channel == "any" else f"AND h.channel = {literal(cap.channel)}"
            counts = con.execute(
                f"WITH h AS ({history}) SELECT i.customer_id, count(h.ts) AS n FROM _nba_ids i "
                f"LEFT JOIN h ON h.customer_id = i.customer_id AND h.ts >= {t} - INTERVAL {cap.days} DAY {on} "
                "GROUP BY i.customer_id"
            ).df()
            counts["n"] = counts["n"].astype("int64")
            full = counts[counts["n"] >= cap.max]
            if learned is not None and learned.mode == "instead" and cap.channel == learned.channel:
                full = full[~full["customer_id"].isin(cadences["customer_id"])]  # the learned cadence replaces it
            label = "contacts on any channel" if cap.channel == "any" else f"{cap.channel} contacts"
            reason = f"cap: {label} in the last {cap.days} days reached (max {cap.max})"
            channels = list(cat.channels) if cap.channel == "any" else [cap.channel]
            for ch in channels:
                parts.append(full[["customer_id"]].assign(channel=ch, step="cap", reason=reason))
            if cap.channel == "any":
                left = (cap.max - counts.set_index("customer_id")["n"]).clip(lower=0)
                slots = left if slots.empty else np.minimum(slots, left.reindex(slots.index))
        if learned is not None:
            parts.append(_learned_blocks(con, history, learned, cadences, t))
        blocked = (
            pd.concat(parts, ignore_index=True)
            if parts
            else pd.DataFrame(columns=["customer_id", "channel", "step", "reason"])
        )
        blocked = blocked.drop_duplicates(["customer_id", "channel"], keep="first").reset_index(drop=True)
        quiet = pd.DataFrame(columns=["customer_id", "reason"])
        if cat.policy.quiet_days_after_service:
            q = cat.policy.quiet_days_after_service
            quiet = con.execute(
                "SELECT DISTINCT e.customer_id FROM events e "
                f"JOIN _nba_ids USING (customer_id) WHERE e.event_type = 'service_contact' "
                f"AND e.ts >= {t} - INTERVAL {q} DAY AND e.ts < {t}"
            ).df()
            quiet["reason"] = f"service contact in the last {q} days"
    finally:
        con.unregister("_nba_ids")
    return PolicyState(blocked, quiet, slots.astype("int64"))


def _learned_blocks(con, history: str, learned, cadences: pd.DataFrame, t: str) -> pd.DataFrame:  # noqa: ANN001
    """Customers whose contacts on the channel in the last ``days`` days reach their learned cadence."""
    con.register("_nba_cadence", cadences[["customer_id", "recommended_cadence"]])
    try:
        full = con.execute(
            f"WITH h AS ({history}) SELECT i.customer_id, count(h.ts) AS n, any_value(k.recommended_cadence) AS k "
            "FROM _nba_ids i JOIN _nba_cadence k USING (customer_id) "
            f"LEFT JOIN h ON h.customer_id = i.customer_id AND h.channel = {literal(learned.channel)} "
            f"AND h.ts >= {t} - INTERVAL {learned.days} DAY "
            "GROUP BY i.customer_id HAVING count(h.ts) >= any_value(k.recommended_cadence)"
        ).df()
    finally:
        con.unregister("_nba_cadence")
    reason = (
        "learned cadence: " + full["n"].astype(str) + f" {learned.channel} contacts in the last {learned.days} days "
        "reach the customer's learned cadence of " + full["k"].astype(str)
    )
    return full[["customer_id"]].assign(channel=learned.channel, step="cap", reason=reason.to_numpy())


def apply_policy(cands: Candidates, state: PolicyState) -> Candidates:
    """``cands`` with the candidates the contact policy forbids moved to the excluded rows."""
    kept = cands.kept
    quiet = kept["customer_id"].isin(state.quiet["customer_id"]).to_numpy()
    reasons = state.quiet.set_index("customer_id")["reason"]
    parts = [cands.excluded, _excluded(kept[quiet], "quiet", kept.loc[quiet, "customer_id"].map(reasons))]
    kept = kept[~quiet]
    merged = kept.merge(state.blocked, on=["customer_id", "channel"], how="left", sort=False)
    hit = merged["step"].notna().to_numpy()
    for step in ("consent", "suppression", "cap"):
        rows = hit & (merged["step"] == step).to_numpy()
        parts.append(_excluded(merged[rows], step, merged.loc[rows, "reason"]))
    return Candidates(kept[~hit].reset_index(drop=True), pd.concat(parts, ignore_index=True))
