"""Typed configuration of a feature snapshot (``configs/features/*.yaml``).

Every window is a whole number of days and means the half-open interval ``[T - days, T)`` before
the cutoff ``T``. Each feature group has its own small settings block, named like the group, so a
YAML file reads as "which groups, and how each is computed". All settings have defaults; the
shipped ``configs/features/default.yaml`` spells them out.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from omnicrm.config import StrictModel, read_yaml, validate_config

#: Feature groups in output-column order. A group is a named set of columns (see
#: :mod:`omnicrm.features.definitions` and :mod:`omnicrm.features.lifecycle`).
FEATURE_GROUPS: tuple[str, ...] = (
    "rfm",
    "tenure",
    "gaps",
    "trend",
    "categories",
    "channels",
    "engagement",
    "returns",
    "service",
    "nps",
    "contacts",
    "lifecycle",
    "rfm_segment",
)

Days = Annotated[int, Field(gt=0, le=36_600)]


def _check_windows(name: str, values: list[int]) -> list[int]:
    """Windows are distinct; they are returned sorted so column order never depends on YAML order."""
    if len(set(values)) != len(values):
        raise ValueError(f"'{name}' lists a window twice: {values}")
    if not values:
        raise ValueError(f"'{name}' needs at least one window")
    return sorted(values)


def category_slug(category: str) -> str:
    """Column-name form of a category: lower case, runs of other characters replaced by ``_``."""
    return re.sub(r"[^0-9a-z]+", "_", category.lower()).strip("_")


class TrendConfig(StrictModel):
    """Recent versus earlier activity: ``[T-days, T)`` against ``[T-2·days, T-days)``."""

    days: Days = 90


class CategoriesConfig(StrictModel):
    """Category mix of purchase spend over ``[T-days, T)``.

    ``shares`` names categories that get their own ``category_share_<slug>_<days>d`` column; the
    default (none) keeps the snapshot independent of a dataset's category list, which belongs in a
    dataset-specific config, not in code.
    """

    days: Days = 365
    shares: list[str] = Field(default_factory=list)

    @field_validator("shares")
    @classmethod
    def _distinct_slugs(cls, values: list[str]) -> list[str]:
        slugs: dict[str, str] = {}
        for value in values:
            slug = category_slug(value)
            if not slug:
                raise ValueError(f"category {value!r} has no letters or digits to name a column")
            if slug in slugs:
                raise ValueError(f"categories {slugs[slug]!r} and {value!r} map to the same column name '{slug}'")
            slugs[slug] = value
        return values


class ChannelsConfig(StrictModel):
    """Channel mix of purchase orders over ``[T-days, T)``."""

    days: Days = 365


class EngagementConfig(StrictModel):
    """E-mail and push response over ``[T-days, T)``; site/app/store visits over each visit window."""

    days: Days = 90
    visit_windows: list[Days] = Field(default_factory=lambda: [30, 90])

    @field_validator("visit_windows")
    @classmethod
    def _windows(cls, values: list[int]) -> list[int]:
        return _check_windows("visit_windows", values)


class ReturnsConfig(StrictModel):
    """Refunded amount against purchased amount over ``[T-days, T)``."""

    days: Days = 365


class ServiceConfig(StrictModel):
    """Service contacts counted over each window."""

    windows: list[Days] = Field(default_factory=lambda: [90, 365])

    @field_validator("windows")
    @classmethod
    def _windows(cls, values: list[int]) -> list[int]:
        return _check_windows("windows", values)


class ContactsConfig(StrictModel):
    """Marketing contacts received over ``[T-days, T)`` (contact-pressure feature)."""

    days: Days = 30


class LifecycleConfig(StrictModel):
    """Thresholds of the lifecycle stage (rules in :mod:`omnicrm.features.lifecycle`).

    ``active_days < at_risk_days < dormant_days`` must hold: they cut the time since the last
    purchase into active / at risk / dormant / churned.
    """

    new_days: Days = 90
    active_days: Days = 90
    at_risk_days: Days = 180
    dormant_days: Days = 365

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.active_days < self.at_risk_days < self.dormant_days:
            raise ValueError(
                "lifecycle thresholds must satisfy active_days < at_risk_days < dormant_days; "
                f"got {self.active_days}, {self.at_risk_days}, {self.dormant_days}"
            )
        return self


class RfmConfig(StrictModel):
    """RFM scoring (rules in :mod:`omnicrm.features.lifecycle`).

    ``window_days`` is the window of frequency (orders) and monetary (spend); recency is the time
    since the last purchase ever. Scores run from 1 to ``bins``. The segment thresholds apply to
    the recency score R and to FM, the mean of the frequency and monetary scores:
    ``high`` and ``mid`` split R and FM into high / middle / low, ``lost`` is the highest R still
    counted as lost.
    """

    window_days: Days = 365
    bins: Annotated[int, Field(ge=2, le=100)] = 5
    high: int = 4
    mid: int = 3
    lost: int = 1

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not 1 <= self.lost < self.mid < self.high <= self.bins:
            raise ValueError(
                "rfm thresholds must satisfy 1 <= lost < mid < high <= bins; got "
                f"lost={self.lost}, mid={self.mid}, high={self.high}, bins={self.bins}"
            )
        return self


class FeatureConfig(StrictModel):
    """Which feature groups a snapshot computes and how.

    Parameters
    ----------
    groups
        Enabled feature groups, any of :data:`FEATURE_GROUPS` (default: all). Columns always come
        out in the order of :data:`FEATURE_GROUPS`, whatever the order here.
    windows
        Windows in days of the recency/frequency/monetary group (``orders_<w>d``, ``spend_<w>d``,
        ``aov_<w>d``).
    trend, categories, channels, engagement, returns, service, contacts, lifecycle, rfm
        Settings of the group of the same name (``rfm`` configures the ``rfm_segment`` group).
    columns
        Keep only these feature columns of the enabled groups (default: all of them), e.g. the
        features a model uses. The query then computes only what they read: a source no kept
        column reads is neither scanned nor joined, and an aggregate nothing reads is not computed.
        Columns still come out in canonical order, after ``customer_id`` and ``cutoff``.
    """

    groups: list[str] = Field(default_factory=lambda: list(FEATURE_GROUPS))
    windows: list[Days] = Field(default_factory=lambda: [30, 90, 365])
    trend: TrendConfig = Field(default_factory=TrendConfig)
    categories: CategoriesConfig = Field(default_factory=CategoriesConfig)
    channels: ChannelsConfig = Field(default_factory=ChannelsConfig)
    engagement: EngagementConfig = Field(default_factory=EngagementConfig)
    returns: ReturnsConfig = Field(default_factory=ReturnsConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    contacts: ContactsConfig = Field(default_factory=ContactsConfig)
    lifecycle: LifecycleConfig = Field(default_factory=LifecycleConfig)
    rfm: RfmConfig = Field(default_factory=RfmConfig)
    columns: list[str] | None = None

    @field_validator("groups")
    @classmethod
    def _known_groups(cls, values: list[str]) -> list[str]:
        allowed = ", ".join(FEATURE_GROUPS)
        unknown = [v for v in values if v not in FEATURE_GROUPS]
        if unknown:
            raise ValueError(f"unknown feature group(s) {', '.join(map(repr, unknown))}; allowed values: {allowed}")
        if len(set(values)) != len(values):
            raise ValueError(f"a feature group is listed twice: {values}")
        if not values:
            raise ValueError(f"at least one feature group is needed; allowed values: {allowed}")
        return values

    @field_validator("windows")
    @classmethod
    def _windows(cls, values: list[int]) -> list[int]:
        return _check_windows("windows", values)

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, columns: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if columns is None:
            return None
        if not columns:
            raise ValueError("it is empty: list at least one feature column, or leave it out for all")
        if len(set(columns)) != len(columns):
            raise ValueError(f"it lists a column twice: {columns}")
        if set(cls.model_fields) - {"columns"} - set(info.data):  # another key failed: its error is the one to read
            return columns
        # the names depend on the groups' settings (windows, days), so they come from the definitions
        from omnicrm.features.snapshot import feature_dtypes  # noqa: PLC0415 (snapshot imports this module)

        settings = {**info.data, "columns": None}
        owner = {
            name: group
            for group in FEATURE_GROUPS
            for name in list(feature_dtypes(cls.model_construct(**(settings | {"groups": [group]}))))[2:]
        }
        groups = info.data["groups"]
        available = [name for name, group in owner.items() if group in groups]
        problems = []
        for name in (c for c in columns if c not in available):
            if name in owner:
                problems.append(f"{name!r} (a column of the group {owner[name]!r}, which is not enabled)")
            else:
                close = difflib.get_close_matches(name.lower(), available, n=1)
                problems.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        if problems:
            enabled = [g for g in FEATURE_GROUPS if g in groups]
            raise ValueError(
                f"{', '.join(problems)}: not a column of the enabled groups ({', '.join(enabled)}); "
                f"their columns: {', '.join(available)}"
            )
        return columns

    def enabled(self) -> list[str]:
        """Enabled groups in canonical (output) order."""
        return [g for g in FEATURE_GROUPS if g in self.groups]


def resolve_feature_config(value: str | Mapping[str, Any] | None, base: str | Path, where: str) -> FeatureConfig:
    """A feature config named by path or given inline, validated; the one resolver every config uses.

    Parameters
    ----------
    value
        A path to a YAML file, relative to ``base`` (the folder of the config that names it), or
        the settings inline (``None`` or ``{}``: the defaults).
    base
        Folder that a relative path is resolved against.
    where
        Names an inline mapping in error messages (``"<file> (key 'features')"``).

    Returns
    -------
    FeatureConfig
    """
    if isinstance(value, str):
        path = Path(base) / value
        return validate_config(FeatureConfig, read_yaml(path), str(path))
    return validate_config(FeatureConfig, dict(value or {}), where)
