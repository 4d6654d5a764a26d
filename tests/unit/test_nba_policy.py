"""The NBA contact policy on a hand-built history: consent, caps, suppression, quiet periods, rules."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest

from omnicrm import schema
from omnicrm.nba.catalogue import Catalogue, compile_catalogue
from omnicrm.nba.policy import apply_policy, apply_rules, contact_policy
from omnicrm.nba.value import expected_values, unit_values

AS_OF = datetime(2024, 3, 1)


def day(n: float) -> datetime:
    """``n`` days before AS_OF."""
    return AS_OF - timedelta(days=n)


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for table in (schema.CUSTOMERS, schema.EVENTS, schema.TREATMENTS):
        con.execute(schema.create_table_sql(table))
    con.executemany(
        "INSERT INTO customers (customer_id, consent_email, consent_sms, consent_push) VALUES (?, ?, ?, ?)",
        [
            ["ok", True, True, True],
            ["no_sms", True, None, True],  # unknown consent is no consent
            ["capped", True, True, True],  # an e-mail 3 days ago: e-mail cap (1 in 7 days) reached
            ["busy", True, True, True],  # two contacts in 7 days: the cap over all channels (2) reached
            ["ignores", True, True, True],  # 3 e-mails in 20 days, none opened, the last 5 days ago
            ["opener", True, True, True],  # the same, but opened one: not suppressed
            ["complained", True, True, True],  # a service contact 2 days ago: quiet period
            ["late", True, True, True],  # contacts at and after as_of only: never read
        ],
    )
    events = [
        ("capped", day(3), "email_sent"),
        ("busy", day(2), "push_sent"),
        ("ignores", day(25), "email_sent"),
        ("ignores", day(15), "email_sent"),
        ("ignores", day(8), "email_sent"),
        ("opener", day(25), "email_sent"),
        ("opener", day(15), "email_sent"),
        ("opener", day(8), "email_sent"),
        ("opener", day(7.5), "email_open"),
        ("complained", day(2), "service_contact"),
        ("late", AS_OF, "email_sent"),
        ("late", AS_OF + timedelta(days=1), "service_contact"),
    ]
    con.executemany(
        "INSERT INTO events (event_id, customer_id, ts, event_type) VALUES (?, ?, ?, ?)",
        [[f"e{i}", *e] for i, e in enumerate(events)],
    )
    # a campaign's treatment-group send counts as a contact; its control group was not contacted
    con.executemany(
        'INSERT INTO treatments (customer_id, ts, campaign_id, action, channel, "group", cost) '
        "VALUES (?, ?, ?, ?, ?, ?, 0)",
        [["busy", day(1), "C1", "x", "sms", "treatment"], ["ok", day(1), "C1", "x", "sms", "control"]],
    )
    return con


def catalogue() -> Catalogue:
    cfg = {
        "name": "t",
        "store": "unused",
        "effect_model": "t-uplift-purchase",
        "channels": {"email": {"cost": 0.01}, "sms": {"cost": 0.05}, "push": {"cost": 0.01}},
        "actions": {"a": {"channels": ["email", "sms", "push"]}},
        "value": {"column": "aov", "fallback": 1.0},
        "rules": {"eligibility": {"buyer": "aov > 0"}},
        "policy": {
            "caps": [{"channel": "email", "max": 1, "days": 7}, {"channel": "any", "max": 2, "days": 7}],
            "suppression": [{"channel": "email", "sends": 3, "days": 30, "suppress_days": 14}],
            "quiet_days_after_service": 7,
        },
    }
    return compile_catalogue(Catalogue.model_validate(cfg), {"aov"}, "t.yaml")


def test_the_policy_drops_what_the_history_forbids_with_its_reason(con: duckdb.DuckDBPyConnection) -> None:
    ids = ["ok", "no_sms", "capped", "busy", "ignores", "opener", "complained", "late", "nobody"]
    feats = pd.DataFrame({"customer_id": ids, "aov": [10.0] * 8 + [None]})
    cat = catalogue()
    state = contact_policy(con, feats["customer_id"], cat, AS_OF)
    cands = apply_policy(apply_rules(feats, cat, con), state)
    kept = set(zip(cands.kept["customer_id"], cands.kept["channel"], strict=True))
    why = cands.excluded.set_index(["customer_id", "channel"])[["step", "reason"]]
    assert {("ok", "email"), ("ok", "sms"), ("ok", "push")} <= kept
    assert {("late", "email"), ("late", "sms"), ("late", "push")} <= kept
    assert why.loc[("nobody", "email"), "step"] == "eligibility"
    assert why.loc[("nobody", "email"), "reason"] == "eligibility.buyer: aov > 0"
    assert why.loc[("no_sms", "sms"), "reason"] == "no consent to sms"
    assert ("no_sms", "email") in kept
    assert why.loc[("capped", "email"), "reason"] == "cap: email contacts in the last 7 days reached (max 1)"
    assert ("capped", "sms") in kept
    assert all(why.loc[("busy", ch), "step"] == "cap" for ch in ("email", "sms", "push"))
    assert why.loc[("ignores", "email"), "step"] == "suppression"
    assert ("opener", "email") in kept
    assert all(why.loc[("complained", ch), "step"] == "quiet" for ch in ("email", "sms", "push"))
    assert state.slots["capped"] == 1 and state.slots["ok"] == 2 and state.slots["busy"] == 0


def test_an_action_with_a_negative_effect_is_dropped_for_its_value(con: duckdb.DuckDBPyConnection) -> None:
    feats = pd.DataFrame({"customer_id": ["ok"], "aov": [10.0]})
    cat = catalogue()
    cands = apply_policy(apply_rules(feats, cat, con), contact_policy(con, feats["customer_id"], cat, AS_OF))
    effects = pd.DataFrame({"customer_id": ["ok"], "action": ["a"], "effect": [-0.1]})
    out = expected_values(cands, effects, unit_values(feats, cat), cat)
    assert out.kept.empty
    value = out.excluded[out.excluded["step"] == "value"]
    assert len(value) == 3 and value["reason"].eq("expected value <= 0: no action is better").all()


def test_the_value_formula(con: duckdb.DuckDBPyConnection) -> None:
    cfg = catalogue().model_dump()
    cfg["channels"]["sms"]["reach"] = 0.5
    cfg["actions"]["a"]["offer"] = {"fixed": 0.2, "share": 0.1}
    cfg["actions"]["a"]["lever"] = 2.0
    cfg["value"] = {"column": "aov", "scale": 0.3, "fallback": 1.0, "order_value": "aov", "base_rate": 0.2}
    cat = compile_catalogue(Catalogue.model_validate(cfg), {"aov"}, "t.yaml")
    feats = pd.DataFrame({"customer_id": ["ok"], "aov": [50.0]})
    cands = apply_policy(apply_rules(feats, cat, con), contact_policy(con, feats["customer_id"], cat, AS_OF))
    effects = pd.DataFrame({"customer_id": ["ok"], "action": ["a"], "effect": [0.2]})
    got = expected_values(cands, effects, unit_values(feats, cat), cat).kept.set_index("channel")
    effect = 0.2 * 0.5
    value = effect * 50 * 0.3 * 2.0
    cost = 0.05 + 0.2 + 0.1 * 50 * (0.2 + effect)
    assert got.loc["sms", "effect"] == pytest.approx(effect)
    assert got.loc["sms", "value"] == pytest.approx(value)
    assert got.loc["sms", "cost"] == pytest.approx(cost)
    assert got.loc["sms", "expected_value"] == pytest.approx(value - cost)
    assert np.isclose(got.loc["email", "effect"], 0.2)


def test_the_long_term_weight_multiplies_the_value_by_its_formula(con: duckdb.DuckDBPyConnection) -> None:
    from omnicrm.nba.value import long_term_weights

    cfg = catalogue().model_dump()
    cfg["value"] = {"column": "aov", "scale": 0.3, "fallback": 1.0, "base_rate": 0.2}
    plain = compile_catalogue(Catalogue.model_validate(cfg), {"aov", "clv"}, "t.yaml")
    cfg["value"]["long_term"] = {"column": "clv", "weight": 0.5, "reference": "mean", "min": 0.5, "max": 1.4}
    weighted = compile_catalogue(Catalogue.model_validate(cfg), {"aov", "clv"}, "t.yaml")
    # clv 100, 300 and missing: mean 200; 1 + 0.5 (x/200 - 1) = 0.75, 1.25 (capped at 1.4: no), 1 (missing)
    feats = pd.DataFrame({"customer_id": ["ok", "no_sms", "capped"], "aov": [50.0] * 3, "clv": [100.0, 300.0, None]})
    lt = long_term_weights(feats, weighted.value.long_term)
    assert lt.reference == pytest.approx(200) and lt.missing == 1
    np.testing.assert_allclose(lt.weights, [0.75, 1.25, 1.0])
    effects = pd.DataFrame({"customer_id": ["ok", "no_sms", "capped"], "action": "a", "effect": 0.2})
    cands = apply_policy(apply_rules(feats, plain, con), contact_policy(con, feats["customer_id"], plain, AS_OF))
    base = expected_values(cands, effects, unit_values(feats, plain), plain).kept.set_index(["customer_id", "channel"])
    got = expected_values(cands, effects, unit_values(feats, weighted), weighted).kept
    got = got.set_index(["customer_id", "channel"])
    ratio = (got["value"] / base["value"]).groupby(level=0).first()
    assert ratio.to_dict() == pytest.approx({"ok": 0.75, "no_sms": 1.25, "capped": 1.0})
    assert (got["cost"] == base["cost"]).all(), "the weight multiplies the value, never the cost"
    assert (got["expected_value"] == got["value"] - got["cost"]).all()
    # a weight that would leave [min, max] is clipped there; a fixed reference is used as given
    steep = weighted.value.long_term.model_copy(update={"weight": 3.0, "reference": 100.0})
    np.testing.assert_allclose(long_term_weights(feats, steep).weights, [1.0, 1.4, 1.0])


def test_the_list_check_finds_every_kind_of_violation(con: duckdb.DuckDBPyConnection) -> None:
    from omnicrm.nba.check import violations

    cfg = catalogue().model_dump()
    cfg["allocation"] = {"budget": 1.0, "capacity": {"push": 0}}
    cfg["actions"]["a"]["max_volume"] = 3
    cat = compile_catalogue(Catalogue.model_validate(cfg), {"aov"}, "t.yaml")
    bad = pd.DataFrame(
        [
            ("no_sms", "a", "sms", 0.5, 1.0),
            ("capped", "a", "email", 0.5, 1.0),
            ("busy", "a", "push", 0.5, 1.0),
            ("ignores", "a", "email", 0.1, 1.0),
            ("complained", "a", "sms", 0.1, -1.0),
        ],
        columns=["customer_id", "action", "channel", "cost", "expected_value"],
    )
    found = " | ".join(violations(bad, con, cat, AS_OF))
    for words in (
        "1 sends on sms without consent",
        "1 customers over the cap email 1 in 7 days",
        "1 customers over the cap any 2 in 7 days",
        "1 customers contacted in their quiet period",
        "1 sends on a suppressed channel",
        "over the budget 1.0",
        "1 sends on push over its capacity 0",
        "5 sends of a outside [0, 3]",
        "rows of non-positive expected value",
    ):
        assert words in found
    assert violations(bad.iloc[:0], con, cat, AS_OF) == []


def _learned(mode: str) -> Catalogue:
    cat = catalogue()
    cfg = cat.model_dump()
    cfg["policy"]["cadence"] = {"table": "unused.parquet", "channel": "email", "mode": mode, "days": 28}
    return compile_catalogue(Catalogue.model_validate(cfg), {"aov"}, "t.yaml")


@pytest.mark.parametrize("mode", ["under", "instead"])
def test_the_learned_cadence_blocks_a_customer_whose_contacts_reach_it(
    con: duckdb.DuckDBPyConnection, mode: str
) -> None:
    from omnicrm.nba.check import violations

    cat = _learned(mode)
    # ok: no e-mail yet, cadence 0 (no consent in the frequency table) -> blocked on e-mail;
    # capped: one e-mail 3 days ago, cadence 2 -> the learned cadence allows one more, the static cap (1 in 7 days)
    #   does not, unless the learned cadence replaces it; ignores: three e-mails in 25 days, cadence 8 -> allowed by
    #   the learned cadence (still suppressed); opener: three e-mails, cadence 2 -> blocked; busy: no row -> static only
    cadences = pd.DataFrame({"customer_id": ["ok", "capped", "ignores", "opener"], "recommended_cadence": [0, 2, 8, 2]})
    ids = pd.Series(["ok", "capped", "ignores", "opener", "busy"])
    state = contact_policy(con, ids, cat, AS_OF, cadences=cadences)
    email = state.blocked[state.blocked["channel"] == "email"].set_index("customer_id")
    assert email.loc["ok", "reason"].startswith("learned cadence: 0 email contacts")
    assert email.loc["opener", "reason"] == (
        "learned cadence: 3 email contacts in the last 28 days reach the customer's learned cadence of 2"
    )
    assert email.loc["ignores", "step"] == "suppression"
    if mode == "under":
        assert email.loc["capped", "reason"].startswith("cap: email contacts in the last 7 days")
    else:
        assert "capped" not in email.index
    # 'busy' has no learned cadence: only its cap over all channels blocks it
    assert email.loc["busy", "reason"].startswith("cap: contacts on any channel")
    # the list check counts the learned cadence: two more e-mails to 'capped' break it, one does not (instead mode)
    cat._cadences = cadences
    sent = pd.DataFrame(
        {"customer_id": ["capped"], "action": ["a"], "channel": ["email"], "cost": [0.01], "expected_value": [1.0]}
    )
    found = violations(sent, con, cat, AS_OF)
    assert not [v for v in found if "learned" in v]
    assert any("cap email" in v for v in found) == (mode == "under")
    two = pd.concat([sent, sent.assign(action="b")], ignore_index=True)
    assert any("over their learned email cadence" in v for v in violations(two, con, cat, AS_OF))
