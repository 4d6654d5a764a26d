"""Next-best-action lists with the learned cadence vs the static caps, judged on the synthetic world's truth.

Needs the demo world (``make demo``: store, registry with the champions the NBA catalogue reads) and the
learned cadences of ``omnicrm frequency configs/frequency/synthetic.yaml --as-of 2024-12-31 --out
data/frequency/synthetic.parquet``. Builds one list per contact policy from ``configs/nba/synthetic.yaml``:

* ``static``: the catalogue as shipped (caps of e-mail 2 and any channel 3 a week, SMS 1 a fortnight);
* ``learned-under``: ``policy.cadence`` (mode ``under``): the learned e-mail cadence under the static caps;
* ``learned-instead``: ``policy.cadence`` (mode ``instead``): the learned cadence replaces the e-mail cap;
* ``no-email-cap``: the static caps without the e-mail cap (what dropping the cap alone does, for everyone).

At 2024-12-31 the weekly newsletter has gone out twice in the last seven days (Thursday the 26th and the
period's last, partial week on Monday the 30th), so the shipped e-mail cap (2 a week) blocks e-mail for
every subscriber; the learned cadence counts the last 28 days instead.

The **true** incremental margin of a list sums over its rows, with the generator's truth for the people
behind each customer (``truth/treatment_effects.parquet``, ``truth/people.parquet``,
``truth/contact.parquet``, mapped through the store's identity links):

    2 weeks x tau(person, action) x reach(channel) x (1 + purchase_rate / 2) x order_margin(person)
    - cost of the row (contact and offer, as the catalogue prices it)
    - [e-mail] P(unsubscribe | the person's e-mail load and tolerance) x subscribed_value(person)

``tau`` is the person's true effect of the action on their weekly purchase probability (an exposure's
effect over its channel's reach); the unsubscribe chance and the value of staying subscribed are the
generator's (``omnicrm.synthetic.fatigue``). Push opt-outs are not priced (the generator gives a
marketing push no purchase value), nor the next newsletters' lower opens after an extra e-mail.

Usage::

    python benchmarks/frequency_nba.py            # three lists at 2024-12-31, ~2 minutes
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from omnicrm.store import open_store  # noqa: E402
from omnicrm.synthetic.campaigns import CHANNEL_REACH, EFFECT_WEEKS  # noqa: E402
from omnicrm.synthetic.fatigue import unsubscribe_probability  # noqa: E402
from omnicrm.uplift.truth import person_customers  # noqa: E402


def true_margin(nba: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Per row of the list: true incremental margin of its action and what the e-mail costs in unsubscribes."""
    rows = nba.merge(truth, on="customer_id", how="left")
    tau = np.select(
        [rows["action"] == a for a in ("discount_10pct", "free_shipping", "new_arrivals")],
        [rows[f"tau_{a}"] for a in ("discount_10pct", "free_shipping", "new_arrivals")],
        np.nan,
    )
    reach = rows["channel"].map(CHANNEL_REACH).to_numpy(float)
    gain = EFFECT_WEEKS * tau * reach * (1.0 + rows["purchase_rate"] / 2.0) * rows["order_margin"]
    p_unsub = unsubscribe_probability(rows["email_load"].to_numpy(float), rows["tolerance"].to_numpy(float))
    unsub = np.where((rows["channel"] == "email") & rows["subscribed"], p_unsub * rows["subscribed_value"], 0.0)
    return pd.DataFrame(
        {
            "customer_id": rows["customer_id"],
            "channel": rows["channel"],
            "gain": np.nan_to_num(gain),
            "cost": rows["cost"].to_numpy(float),
            "unsubscribe_cost": np.nan_to_num(unsub),
            "known": np.isfinite(gain),
        }
    )


def load_truth(world: Path, store: str) -> pd.DataFrame:
    """Per customer: the mean over the people behind them of the true effects and contact truth."""
    effects = pd.read_parquet(world / "truth/treatment_effects.parquet")
    reach = effects["channel"].map(CHANNEL_REACH)
    cols = [c for c in effects.columns if c.startswith("effect_")]
    base = effects[["person_id"]].copy()
    for c in cols:
        base["tau_" + c.removeprefix("effect_")] = effects[c] / reach
    tau = base.groupby("person_id", as_index=False).mean()
    people = pd.read_parquet(world / "truth/people.parquet", columns=["person_id", "purchase_rate"])
    contact = pd.read_parquet(world / "truth/contact.parquet")
    per = people.merge(contact, on="person_id").merge(tau, on="person_id", how="left")
    con = open_store(store, deterministic=True)
    try:
        links = con.execute("select source, source_record_id, customer_id from identity_links").df()
    finally:
        con.close()
    pairs = person_customers(pd.read_parquet(world / "truth/record_owner.parquet"), links)
    merged = per.merge(pairs, on="person_id")
    merged["subscribed"] = merged["subscribed"].astype(float)
    out = merged.drop(columns=["person_id"]).groupby("customer_id", as_index=False).mean()
    out["subscribed"] = out["subscribed"] >= 0.5
    return out


def main() -> None:
    """Build the three lists and print their true incremental margin."""
    from omnicrm.pipeline.nba import run_nba

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalogue", default="configs/nba/synthetic.yaml")
    ap.add_argument("--cadences", default="data/frequency/synthetic.parquet")
    ap.add_argument("--world", default="data/world")
    ap.add_argument("--as-of", default="2024-12-31")
    ap.add_argument("--out-dir", default="data/frequency/nba")
    ap.add_argument("--policies", default="static,learned-under,learned-instead,no-email-cap")
    args = ap.parse_args()
    wanted = args.policies.split(",")
    as_of = datetime.fromisoformat(args.as_of)
    base = yaml.safe_load(Path(args.catalogue).read_text())
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    truth = load_truth(Path(args.world), base["store"])
    results = []
    for name, cadence in (
        ("static", None),
        ("learned-under", {"table": args.cadences, "channel": "email", "mode": "under", "days": 28}),
        ("learned-instead", {"table": args.cadences, "channel": "email", "mode": "instead", "days": 28}),
        ("no-email-cap", None),
    ):
        if name not in wanted:
            continue
        cfg = dict(base, policy=dict(base["policy"]))
        if cadence is not None:
            cfg["policy"]["cadence"] = cadence
        if name == "no-email-cap":
            cfg["policy"]["caps"] = [c for c in base["policy"]["caps"] if c["channel"] != "email"]
        # beside the shipped catalogue: its relative paths (features, task configs) resolve the same way
        path = Path(args.catalogue).with_name(f".bench-{name}.yaml")
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        try:
            result = run_nba(path, as_of, out_dir / f"{name}.parquet")
        finally:
            path.unlink()
        nba = pd.read_parquet(result.out)
        rows = true_margin(nba, truth)
        results.append(
            {
                "policy": name,
                "sends": len(nba),
                "email": int((nba["channel"] == "email").sum()),
                "sms": int((nba["channel"] == "sms").sum()),
                "push": int((nba["channel"] == "push").sum()),
                "expected_value": float(nba["expected_value"].sum()),
                "true_gain": float(rows["gain"].sum()),
                "cost": float(rows["cost"].sum()),
                "true_unsubscribe_cost": float(rows["unsubscribe_cost"].sum()),
                "true_incremental_margin": float((rows["gain"] - rows["cost"] - rows["unsubscribe_cost"]).sum()),
                "rows_without_truth": int((~rows["known"]).sum()),
            }
        )
    table = pd.DataFrame(results)
    pd.set_option("display.width", 200)
    print(table.to_string(index=False, float_format=lambda x: f"{x:,.2f}"))


if __name__ == "__main__":
    main()
