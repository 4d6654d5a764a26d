"""Batch scoring: the pure pieces of ``omnicrm score`` (the wiring is :mod:`omnicrm.pipeline.score`).

* :mod:`~omnicrm.score.config`: the strict, typed scoring config (``configs/score/<dataset>.yaml``);
* :mod:`~omnicrm.score.tables`: the long ``scores`` table and the per-customer ``excluded`` rows;
* :mod:`~omnicrm.score.accounting`: every customer scored or excluded with a reason, per step;
* :mod:`~omnicrm.score.drift`: PSI per feature and score, population change, changed next-best
  actions, inputs outside each model's training range, and the breaches of the configured thresholds;
* :mod:`~omnicrm.score.manifest`: what a run's ``manifest.json`` holds, and the per-step clock.

Publishing a run (staging folder, rename, ``latest`` pointer, lock) is file work and lives in
:mod:`omnicrm.store.runs`.
"""
