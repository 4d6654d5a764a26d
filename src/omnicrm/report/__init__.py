"""The marketing report: KPIs, cohorts, lifecycle flows, campaign return and attribution of a store.

Pure steps (a DuckDB connection, dates and settings in, frames out; no paths, no MLflow):

* :mod:`~omnicrm.report.kpis`: customer base, cohorts, repurchase, value, omni-channel, NPS (SQL);
* :mod:`~omnicrm.report.campaigns`: campaign return against the randomised control, and the
  attribution check against it;
* :mod:`~omnicrm.report.attribution`: rule-based and Markov multi-touch attribution;
* :mod:`~omnicrm.report.build`: the report as sections of tables and plots (:func:`build_report`);
* :mod:`~omnicrm.report.page`: the self-contained HTML page (:func:`render`);
* :mod:`~omnicrm.report.config`: the report config.

The wiring (store, registry, MLflow, the output file) is :mod:`omnicrm.pipeline.report`.
"""
