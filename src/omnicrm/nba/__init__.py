"""Next-best-action lists: the best action, channel and product per customer under the contact policy.

Pure steps (frames, settings and ``as_of`` in, frames out; history is read with DuckDB SQL over the
store connection, ``ts < as_of`` only), in the order the wiring (:mod:`omnicrm.pipeline.nba`) calls
them:

* :mod:`~omnicrm.nba.catalogue`: the strict action catalogue and its rules, parsed safely;
* :mod:`~omnicrm.nba.policy`: engagement rules, consent, caps, suppression, quiet periods, each
  drop with its reason;
* :mod:`~omnicrm.nba.value`: expected incremental value = effect × value − expected cost;
* :mod:`~omnicrm.nba.allocate`: the allocation under per-customer, budget, capacity and volume
  limits (HiGHS, or a Lagrangian method with its gap to the LP bound);
* :mod:`~omnicrm.nba.lists`: the list with its reasons, the excluded rows, the constraint summary;
* :mod:`~omnicrm.nba.check`: the list checked against the catalogue and the history, every constraint
  counted again.
"""
