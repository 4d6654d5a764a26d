"""Synthetic omni-channel retail world with ground truth.

A seeded, configurable generator of people (households, personal data, latent traits) living week
by week (buying in store and online, returning, browsing, reading e-mail, calling the service
centre, answering surveys, churning) and of randomised campaigns with known per-person effects.
It writes ten messy raw source files (``raw/*.csv``) and the truth behind them
(``truth/*.parquet``): who owns each record, every person's traits and churn date, and the true
effect of every action for every exposed person.

Modules, by purpose:

- ``config``: :class:`WorldConfig` and :class:`MessConfig` (``configs/generate/*.yaml``)
- ``vocabulary``: categories, names, e-mail domains, regions (data only)
- ``people``: households, personal data, traits and identities held by the retailer
- ``catalogue``: products
- ``campaigns``: campaign schedule, random assignment, true effects
- ``behaviour``: the week-by-week simulation
- ``mess``: typos, case/whitespace variants, missing values, malformed and duplicate rows
- ``sources``: rendering of each source file and of the record-owner truth
- ``formats``: text of ids, money, timestamps, phones and cards
- ``contract``: file, column and record-key names
- ``writer``: CSV / Parquet / JSON output
- ``world``: :func:`generate_world`
"""

from omnicrm.synthetic.config import MessConfig, WorldConfig
from omnicrm.synthetic.world import WorldSummary, generate_world

__all__ = ["MessConfig", "WorldConfig", "WorldSummary", "generate_world"]
