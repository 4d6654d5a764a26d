"""The action catalogue of next-best-action lists: actions, channels, costs, value and rules.

A catalogue (``configs/nba/<dataset>.yaml``) is strict like every config: an unknown key is an
error naming the file and the key. It says which actions exist and on which channels each may be
sent, what a contact costs per channel and how much of an action's effect a channel delivers
(``reach``), what the offer costs (a fixed amount per send, or a share of the order value paid only
on conversion), which registered effect model estimates each action's effect and how a unit of that
effect is valued (margin per order by default), which actions carry a product (the recommender's top
item), the contact policy (consent, caps, suppression, quiet period) and the allocation limits.

Rules (eligibility, applicability, suitability, as in Pega's engagement policies) are boolean SQL
expressions over the customer's feature columns at ``as_of``. They are parsed with sqlglot when the
catalogue loads and accepted only when every node is a column, a literal or a comparison/boolean/
arithmetic operator from a short whitelist (no functions, no subqueries), and only when every column
is a known feature column: a rule with a syntax error or an unknown column is a
:class:`~omnicrm.errors.ConfigError` naming the file, the rule and the column. Nothing is ``eval``'d.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import sqlglot
from pydantic import Field, PrivateAttr, model_validator
from sqlglot import exp

from omnicrm.config import StrictModel, read_yaml, validate_config
from omnicrm.errors import ConfigError

__all__ = [
    "ActionSpec",
    "AllocationSettings",
    "Catalogue",
    "ChannelSpec",
    "ContactCap",
    "EvaluationSettings",
    "OfferCost",
    "PolicySettings",
    "Rule",
    "RuleSet",
    "Suppression",
    "ValueSpec",
    "compile_catalogue",
    "compile_rule",
    "feature_columns",
    "load_catalogue",
    "RULE_KINDS",
]

#: the engagement rules, in the order they are applied (the first that fails is the reason)
RULE_KINDS = ("eligibility", "applicability", "suitability")

#: sqlglot node types a rule may contain: columns, literals, comparisons, boolean logic, arithmetic
_ALLOWED_NODES: tuple[type[exp.Expression], ...] = (
    exp.Column,
    exp.Identifier,
    exp.Literal,
    exp.Boolean,
    exp.Null,
    exp.Paren,
    exp.Tuple,
    exp.And,
    exp.Or,
    exp.Not,
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.Is,
    exp.In,
    exp.Between,
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Div,
    exp.Neg,
)


class ChannelSpec(StrictModel):
    """A channel: the cost of one contact, the share of an action's effect it delivers, its consent column."""

    cost: float = Field(0.0, ge=0)
    reach: float = Field(1.0, gt=0, le=1)
    consent: str | None = None  # column of ``customers``; default ``consent_<channel>``


class OfferCost(StrictModel):
    """An offer's cost: ``fixed`` per send, plus ``share`` of the order value paid only on conversion."""

    fixed: float = Field(0.0, ge=0)
    share: float = Field(0.0, ge=0, le=1)


class ValueSpec(StrictModel):
    """What one unit of the effect model's outcome is worth, per customer.

    ``column`` (a feature column, e.g. ``aov_365d``) times ``scale`` (e.g. the margin rate), or
    ``fallback`` when the column is missing, null or not positive; without ``column``, ``fallback``.
    ``order_value`` (a feature column or none) is the order value a share-of-order offer pays on;
    ``base_rate`` (a feature column or a number) the customer's conversion probability without an
    action, to which the effect is added to get the probability the offer is paid.
    """

    outcome: str = "margin"
    column: str | None = None
    scale: float = Field(1.0, gt=0)
    fallback: float = Field(0.0, ge=0)
    order_value: str | None = None
    order_value_fallback: float = Field(0.0, ge=0)
    base_rate: float | str = 0.0


class RuleSet(StrictModel):
    """Named boolean expressions per kind; a customer passes a kind when every expression is true."""

    eligibility: dict[str, str] = Field(default_factory=dict)
    applicability: dict[str, str] = Field(default_factory=dict)
    suitability: dict[str, str] = Field(default_factory=dict)


class ActionSpec(StrictModel):
    """One action: its channels, offer cost, effect source, optional product and rules."""

    channels: list[str] = Field(min_length=1)
    offer: OfferCost = Field(default_factory=OfferCost)
    effect_model: str | None = None  # registered effect model; default: the catalogue's
    effect_action: str | None = None  # the action's name in the effect model; default: this action's name
    product: Literal["none", "recommended"] = "none"
    lever: float = Field(1.0, gt=0)  # business lever: multiplies the value (logged with every run)
    min_volume: int = Field(0, ge=0)
    max_volume: int | None = Field(None, ge=0)
    rules: RuleSet = Field(default_factory=RuleSet)


class ContactCap(StrictModel):
    """At most ``max`` contacts on ``channel`` (``any``: all channels together) in the last ``days`` days."""

    channel: str
    max: int = Field(ge=0)
    days: int = Field(ge=1)


class Suppression(StrictModel):
    """``sends`` contacts on ``channel`` without an open in ``days`` days suppress the channel ``suppress_days``."""

    channel: str
    sends: int = Field(ge=1)
    days: int = Field(ge=1)
    suppress_days: int = Field(ge=1)


class PolicySettings(StrictModel):
    """The contact policy read from the store's history before ``as_of``."""

    caps: list[ContactCap] = Field(default_factory=list)
    suppression: list[Suppression] = Field(default_factory=list)
    quiet_days_after_service: int = Field(0, ge=0)


class AllocationSettings(StrictModel):
    """Limits of the allocation: actions per customer, budget, channel capacities, exact-solver size."""

    per_customer: int = Field(1, ge=1)
    budget: float | None = Field(None, ge=0)
    capacity: dict[str, int] = Field(default_factory=dict)
    exact_limit: int = Field(5_000, ge=0)  # candidates up to which the MILP is solved exactly (HiGHS)
    time_limit: float = Field(60.0, gt=0)  # seconds HiGHS may take before the Lagrangian method takes over


class EvaluationSettings(StrictModel):
    """How ``omnicrm nba-eval`` judges the catalogue off-policy on randomised history (``docs/nba.md``).

    ``uplift`` is an uplift config (path relative to the catalogue) whose source holds the randomised
    rows, their features at send time and outcomes, and whose learner settings fit the effect and
    outcome models (cross-fitted by customer: no row is scored by a model that saw it). ``outcome``
    is the outcome the value is on (default: the uplift config's ``effects.outcome``); ``channel``
    the one channel every row was sent on (needed for a feature table; store exposures carry their
    own). ``budgets`` are shares of the eligible rows every policy may contact (``headline`` is the
    one the verdict quotes), ``curve`` the shares of the value-vs-budget plot.
    """

    uplift: str
    outcome: str | None = None
    learner: str | None = None  # default: the uplift config's effects.learner
    channel: str | None = None
    budgets: list[float] = Field(default_factory=lambda: [0.1, 0.3, 0.5], min_length=1)
    headline: float = Field(0.3, gt=0, le=1)
    curve: list[float] = Field(
        default_factory=lambda: [0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0], min_length=2
    )
    folds: int = Field(2, ge=2, le=10)
    bootstrap: int = Field(400, ge=50, le=10_000)
    seed: int = 0

    @model_validator(mode="after")
    def _check_shares(self) -> EvaluationSettings:
        for key in ("budgets", "curve"):
            bad = [b for b in getattr(self, key) if not 0 < b <= 1]
            if bad:
                raise ValueError(f"evaluation.{key}: shares must be in (0, 1]; got {bad}")
        return self


class Catalogue(StrictModel):
    """A next-best-action catalogue (see the module docstring)."""

    name: str
    store: str | None = None  # without a store the catalogue can only be judged (nba-eval), not listed
    features: str | dict[str, Any] = "../features/default.yaml"
    effect_model: str | None = None
    recommender: str | None = None
    channels: dict[str, ChannelSpec] = Field(min_length=1)
    actions: dict[str, ActionSpec] = Field(min_length=1)
    value: ValueSpec = Field(default_factory=ValueSpec)
    rules: RuleSet = Field(default_factory=RuleSet)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    allocation: AllocationSettings = Field(default_factory=AllocationSettings)
    evaluation: EvaluationSettings | None = None
    experiment: str = "omnicrm-nba"
    _compiled: dict[str, list[Rule]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check_references(self) -> Catalogue:
        for name, action in self.actions.items():
            unknown = [c for c in action.channels if c not in self.channels]
            if unknown:
                raise ValueError(f"action '{name}': channel(s) {unknown} are not in 'channels' {list(self.channels)}")
            if len(set(action.channels)) != len(action.channels):
                raise ValueError(f"action '{name}': a channel is listed twice")
            if self.store is not None and action.effect_model is None and self.effect_model is None:
                raise ValueError(f"action '{name}': no effect_model (set it on the action or the catalogue)")
            if action.max_volume is not None and action.max_volume < action.min_volume:
                raise ValueError(f"action '{name}': max_volume {action.max_volume} < min_volume {action.min_volume}")
            if action.product == "recommended" and self.recommender is None:
                raise ValueError(f"action '{name}': product 'recommended' needs a 'recommender'")
        for cap in self.policy.caps:
            if cap.channel != "any" and cap.channel not in self.channels:
                raise ValueError(f"policy.caps: channel '{cap.channel}' is not in 'channels'")
        for rule in self.policy.suppression:
            if rule.channel not in self.channels:
                raise ValueError(f"policy.suppression: channel '{rule.channel}' is not in 'channels'")
        unknown = [c for c in self.allocation.capacity if c not in self.channels]
        if unknown:
            raise ValueError(f"allocation.capacity: channel(s) {unknown} are not in 'channels'")
        return self

    def require_store(self, where: str) -> str:
        """The store path, or :class:`ConfigError` naming ``where`` when the catalogue has none."""
        if self.store is None:
            raise ConfigError(
                f"{where}: catalogue '{self.name}' has no 'store': it can be judged (omnicrm nba-eval) but a "
                "list needs a store to read customers, consent and contact history from"
            )
        return self.store

    def effect_source(self, action: str) -> tuple[str, str]:
        """``(registered effect model, action name in it)`` of ``action``."""
        spec = self.actions[action]
        model = spec.effect_model or self.effect_model
        assert model is not None  # checked at load
        return model, spec.effect_action or action

    def consent_column(self, channel: str) -> str:
        """The ``customers`` column holding consent to ``channel``."""
        return self.channels[channel].consent or f"consent_{channel}"

    def compiled_rules(self, action: str) -> list[Rule]:
        """The rules of ``action`` with their DuckDB SQL (set by :func:`load_catalogue`)."""
        return self._compiled[action]

    def rules_of(self, action: str) -> list[Rule]:
        """The catalogue's rules followed by the action's own, each kind in :data:`RULE_KINDS` order."""
        out = []
        for kind in RULE_KINDS:
            for owner, ruleset in (("catalogue", self.rules), (action, self.actions[action].rules)):
                for name, text in getattr(ruleset, kind).items():
                    out.append(Rule(kind, name, text, owner))
        return out


class Rule:
    """A parsed rule: its kind, name, source text, owner (``catalogue`` or an action) and DuckDB SQL."""

    __slots__ = ("kind", "name", "owner", "sql", "text")

    def __init__(self, kind: str, name: str, text: str, owner: str) -> None:
        self.kind, self.name, self.text, self.owner = kind, name, text, owner
        self.sql = ""

    def __repr__(self) -> str:
        """``Rule(kind.name: text)``."""
        return f"Rule({self.kind}.{self.name}: {self.text})"


def compile_rule(text: str, columns: set[str], where: str) -> str:
    """Parse a rule and return it as DuckDB SQL; :class:`ConfigError` naming ``where`` when it is not allowed.

    Parameters
    ----------
    text
        A boolean expression over feature columns (``recency_days >= 7 AND lifecycle_stage <> 'churned'``).
    columns
        The column names the expression may use.
    where
        The file and rule, for messages (``configs/nba/x.yaml: rule eligibility.not_churned``).

    Returns
    -------
    str
        The expression rendered for DuckDB, with every column quoted.
    """
    try:
        tree = sqlglot.parse_one(text, read="duckdb")
    except sqlglot.errors.ParseError as exc:
        first = exc.errors[0]["description"] if exc.errors else str(exc)
        raise ConfigError(f"{where}: syntax error in '{text}': {first}") from None
    if tree is None:
        raise ConfigError(f"{where}: empty rule")
    for node in tree.walk():
        if not isinstance(node, _ALLOWED_NODES):
            raise ConfigError(
                f"{where}: '{node.sql()}' is not allowed in a rule (only columns, literals, comparisons, "
                "AND/OR/NOT, IS [NOT] NULL, IN, BETWEEN and + - * /)"
            )
        if isinstance(node, exp.Column):
            if node.table:
                raise ConfigError(f"{where}: column '{node.sql()}' names a table; use the bare column name")
            if node.name not in columns:
                raise ConfigError(f"{where}: unknown column '{node.name}' in '{text}'")
            node.set("this", exp.to_identifier(node.name, quoted=True))
    if isinstance(tree, (exp.Column, exp.Literal, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Neg)) and not isinstance(
        tree, exp.Boolean
    ):
        raise ConfigError(f"{where}: '{text}' is not a boolean expression (compare it with something)")
    return tree.sql(dialect="duckdb")


def load_catalogue(path: str | Path, columns: set[str] | None = None) -> Catalogue:
    """Read and validate a catalogue; compile its rules against ``columns`` (default: the feature columns).

    Without ``columns`` the catalogue is read to make a list, so it needs a ``store``.

    Raises
    ------
    ConfigError
        An unknown key, a bad value, a rule that does not parse or names an unknown column: the
        message names the file, the rule and the column.
    """
    cat = validate_config(Catalogue, read_yaml(path), str(path))
    if columns is None:
        cat.require_store(str(path))  # the feature columns of a list are the store's snapshot
        columns = set(feature_columns(cat, path))
    return compile_catalogue(cat, columns, str(path))


def compile_catalogue(cat: Catalogue, columns: set[str], where: str) -> Catalogue:
    """Compile every rule of ``cat`` against ``columns`` (``where`` names the file in messages); returns ``cat``."""
    for col in [cat.value.column, cat.value.order_value, cat.value.base_rate]:
        if isinstance(col, str) and col not in columns:
            raise ConfigError(f"{where}: key 'value': unknown feature column '{col}'")
    for action in cat.actions:
        rules = cat.rules_of(action)
        for rule in rules:
            prefix = "rules" if rule.owner == "catalogue" else f"actions.{action}.rules"
            rule.sql = compile_rule(rule.text, columns, f"{where}: rule {prefix}.{rule.kind}.{rule.name}")
        cat._compiled[action] = rules
    return cat


def feature_columns(cat: Catalogue, path: str | Path) -> list[str]:
    """The feature columns the catalogue's rules may name (from its feature config; no data read)."""
    from omnicrm.features.config import resolve_feature_config
    from omnicrm.features.snapshot import feature_dtypes

    feats = resolve_feature_config(cat.features, Path(path).parent, f"{path}: key 'features'")
    return [c for c in feature_dtypes(feats) if c not in ("customer_id", "cutoff")]
