"""Uplift: which action changes which customer's behaviour.

Per-customer effects of several actions against a shared randomised control
(:mod:`~omnicrm.uplift.learners`: S-, T-, X- and DR-learners, one contract ``fit(X, treatment, y)`` /
``predict_effect(X)``), their honest evaluation on held-out data (:mod:`~omnicrm.uplift.metrics`:
Qini, uplift AUC, uplift at k; :mod:`~omnicrm.uplift.policy`: policy values against the best
constant policy; :mod:`~omnicrm.uplift.evaluate`: cross-fitting over several seeds), campaign
readouts as A/B tests (:mod:`~omnicrm.uplift.readout`), the training rows from a feature table
or the store (:mod:`~omnicrm.uplift.data`), the config (:mod:`~omnicrm.uplift.config`), the
synthetic truth join (:mod:`~omnicrm.uplift.truth`), Qini figures (:mod:`~omnicrm.uplift.plots`)
and the registrable effect model (:mod:`~omnicrm.uplift.model`). Nothing here reads files, opens the
store or logs: the wiring lives in ``omnicrm.pipeline.uplift``.
"""

from omnicrm.uplift.learners import LEARNERS, DRLearner, SLearner, TLearner, UpliftLearner, XLearner, make_learner
from omnicrm.uplift.metrics import qini_coefficient, qini_curve, uplift_at_k, uplift_auc, uplift_curve
from omnicrm.uplift.readout import readout, welch_ate

__all__ = [
    "LEARNERS",
    "DRLearner",
    "SLearner",
    "TLearner",
    "UpliftLearner",
    "XLearner",
    "make_learner",
    "qini_coefficient",
    "qini_curve",
    "readout",
    "uplift_at_k",
    "uplift_auc",
    "uplift_curve",
    "welch_ate",
]
