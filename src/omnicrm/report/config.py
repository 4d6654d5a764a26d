"""The report config (``configs/report/*.yaml``): which store, which windows, which models.

Paths to data (``store``, ``truth``) are relative to the working directory, like every config's;
``features`` and ``clv.task`` name other configs relative to this file (or give ``features`` inline).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from omnicrm.config import StrictModel, load_config

Days = Field(gt=0, le=3650)


class ClvSettings(StrictModel):
    """Where the CLV figures come from.

    ``task``: a CLV task config whose registered model ``model`` (an alias or version) scores the
    customers when it exists; otherwise, or without ``task``, BG/NBD + Gamma-Gamma is fitted on the
    store at the period's end. ``horizon_days``: the classic model's horizon (a registered model
    predicts its own task's horizon).
    """

    task: str | None = None
    model: str = "champion"
    horizon_days: int = Field(default=365, gt=0, le=3650)


class CampaignSettings(StrictModel):
    """``window_days``: outcome window after a campaign's send (the uplift configs' ``window_days``)."""

    window_days: int = Field(default=14, gt=0, le=365)


class AttributionSettings(StrictModel):
    """``lookback_days``: touches this long before a conversion count; ``half_life_days``: time decay."""

    lookback_days: int = Field(default=14, gt=0, le=365)
    half_life_days: float = Field(default=7.0, gt=0, le=365)


class SatisfactionSettings(StrictModel):
    """``contact_days``: service contacts counted before an answer; ``churn_days``: no order after it."""

    contact_days: int = Field(default=90, gt=0, le=3650)
    churn_days: int = Field(default=90, gt=0, le=3650)


class TruthFiles(StrictModel):
    """A synthetic world's truth files (read only to check attribution against them)."""

    effects: str
    record_owner: str
    effect_weeks: int = Field(default=2, gt=0, le=52)


class ReportConfig(StrictModel):
    """A report config.

    Parameters
    ----------
    name
        Names the report (MLflow run name ``report-<name>``, the page title).
    store
        The store file (opened read-only).
    features
        Feature config for the lifecycle stage and RFM segment thresholds (only those two groups
        are computed); a path relative to this file or inline settings (default: the defaults).
    lapse_days
        A customer without an order for this long is lost; one buying after such a gap is reactivated.
    repurchase_days, retention_days
        Windows of the repurchase rate (second order within) and of the omni-channel retention.
    clv, campaigns, attribution, satisfaction
        Settings of those sections.
    truth
        Optional synthetic truth files, for the attribution check.
    experiment
        MLflow experiment of the report runs.
    """

    name: str = Field(min_length=1)
    store: str
    features: str | dict[str, Any] | None = None
    lapse_days: int = Field(default=90, gt=0, le=3650)
    repurchase_days: int = Field(default=90, gt=0, le=3650)
    retention_days: int = Field(default=90, gt=0, le=3650)
    clv: ClvSettings = Field(default_factory=ClvSettings)
    campaigns: CampaignSettings = Field(default_factory=CampaignSettings)
    attribution: AttributionSettings = Field(default_factory=AttributionSettings)
    satisfaction: SatisfactionSettings = Field(default_factory=SatisfactionSettings)
    truth: TruthFiles | None = None
    experiment: str = "omnicrm-report"


def load_report_config(path: str | Path) -> tuple[ReportConfig, Any]:
    """The report config at ``path`` and its feature config (lifecycle and RFM groups only).

    Returns
    -------
    tuple
        The :class:`ReportConfig` and a :class:`~omnicrm.features.config.FeatureConfig`.
    """
    from omnicrm.features.config import resolve_feature_config

    path = Path(path)
    cfg = load_config(ReportConfig, path)
    feats = resolve_feature_config(cfg.features, path.parent, f"{path} (key 'features')")
    feats = feats.model_copy(update={"groups": ["lifecycle", "rfm_segment"]})
    return cfg, feats
