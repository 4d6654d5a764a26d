"""omnicrm: customer analytics workbench for omni-channel retail.

The package mirrors the data flow of DESIGN.md::

    synthetic  -> raw source files (a seeded omni-channel world with ground truth)
    ingest     -> validated, quarantined, pseudonymised source records
    identity   -> one customer_id per person (deterministic + probabilistic links)
    store      -> the unified history (DuckDB file, atomic writes)
    features   -> point-in-time feature snapshots, one row per (customer_id, cutoff)

Nothing heavy is imported here: importing ``omnicrm`` has no side effects.
"""

__version__ = "0.1.0"
