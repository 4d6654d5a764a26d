"""The action catalogue of next-best-action lists: actions, channels, costs, value and rules.

A catalogue (``configs/nba/<dataset>.yaml``) is strict like every config: an unknown key is an
error naming the file and the key. It says which actions exist and on which channels each may be
sent, what a contact costs per channel and how much of an action's effect a channel delivers
(``reach``), what the offer costs (a fixed amount per send, or a share of the order value paid only
on conversion), which registered effect model estimates each action's effect and how a unit of that
effect is valued (margin per order by default), which actions carry a product (the recommender's top
item), the contact policy (consent, caps, suppression, quiet period, optionally the learned cadence of
``omnicrm frequency`` instead of or under the static caps) and the allocation limits.

Rules (eligibility, applicability, suitability, as in Pega's engagement policies) are boolean SQL
expressions over the customer's feature columns at ``as_of`` and the score columns of the registered
task models the catalogue lists under ``scores`` (``p_churn``, ``pred_margin``: their names come from
the task configs, so they are known without scoring). They are parsed with sqlglot when the
catalogue loads and accepted only when every node is a column, a literal or a comparison/boolean/
arithmetic operator from a short whitelist (no functions, no subqueries), and only when every column
is a known feature or score column: a rule with a syntax error or an unknown column is a
:class:`~omnicrm.errors.ConfigError` naming the file, the rule and the column. Nothing is ``eval``'d.
"""

from __future__ import annotations

import difflib
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
    "LongTermWeight",
    "OfferCost",
    "PolicySettings",
    "Rule",
    "RuleSet",
    "ScoreSource",
    "ScoredTask",
    "Suppression",
    "ValueSpec",
    "compile_catalogue",
    "compile_rule",
    "feature_columns",
    "load_catalogue",
    "score_sources",
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


class LongTermWeight(StrictModel):
    """A long-term weight per customer from a feature or score column (formula: ``docs/nba.md``).

    ``long_term(i) = clip(1 + weight × (x(i) / reference − 1), min, max)``, 1 when ``x(i)`` is missing;
    ``reference`` is a number or the population's ``mean``/``median`` of the column at ``as_of``. A
    customer at the reference keeps the value; ``weight`` > 0 favours customers above it (CLV),
    ``weight`` < 0 those below it (a churn probability: the likely stayers).
    """

    column: str
    weight: float
    reference: float | Literal["mean", "median"] = "mean"
    min: float = Field(0.5, ge=0)
    max: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> LongTermWeight:
        if self.min > self.max:
            raise ValueError(f"long_term: min {self.min} > max {self.max}")
        if isinstance(self.reference, float) and self.reference <= 0:
            raise ValueError(f"long_term: reference must be > 0; got {self.reference}")
        return self


class ScoreSource(StrictModel):
    """A registered task model scored at ``as_of``: its task config (relative to the catalogue) and version."""

    config: str
    model: str = "champion"  # alias or version number of every target's registered model


class ValueSpec(StrictModel):
    """What one unit of the effect model's outcome is worth, per customer.

    ``column`` (a feature column, e.g. ``aov_365d``) times ``scale`` (e.g. the margin rate), or
    ``fallback`` when the column is missing, null or not positive; without ``column``, ``fallback``.
    ``order_value`` (a feature column or none) is the order value a share-of-order offer pays on;
    ``base_rate`` (a feature column or a number) the customer's conversion probability without an
    action, to which the effect is added to get the probability the offer is paid. Each may also be a
    score column (``scores``). ``long_term`` (optional) multiplies the value by a per-customer weight
    (:class:`LongTermWeight`).
    """

    outcome: str = "margin"
    column: str | None = None
    scale: float = Field(1.0, gt=0)
    fallback: float = Field(0.0, ge=0)
    order_value: str | None = None
    order_value_fallback: float = Field(0.0, ge=0)
    base_rate: float | str = 0.0
    long_term: LongTermWeight | None = None


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


class LearnedCadence(StrictModel):
    """Each customer's learned cadence on ``channel`` (the ``contact_frequency`` table of ``omnicrm frequency``).

    A customer whose contacts on the channel in the last ``days`` days reach their recommended cadence
    (0 without consent) may not be contacted on it. ``mode``: ``under`` applies it under the static caps
    (both hold), ``instead`` replaces the static caps of that channel for every customer the table has a
    cadence for (caps over ``any`` channel still hold). ``table`` is the Parquet file ``omnicrm frequency
    --out`` wrote, relative to the working directory like ``store``.
    """

    table: str
    channel: str = "email"
    mode: Literal["under", "instead"] = "under"
    days: int = Field(28, ge=1)


class PolicySettings(StrictModel):
    """The contact policy read from the store's history before ``as_of``."""

    caps: list[ContactCap] = Field(default_factory=list)
    suppression: list[Suppression] = Field(default_factory=list)
    quiet_days_after_service: int = Field(0, ge=0)
    cadence: LearnedCadence | None = None


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
    # registered task models scored at as_of (a task config path, or {config, model}); rules and value see their columns
    scores: list[str | ScoreSource] = Field(default_factory=list)
    effect_model: str | None = None
    recommender: str | None = None
    channels: dict[str, ChannelSpec] = Field(min_length=1)
    actions: dict[str, ActionSpec] = Field(min_length=1)
    value: ValueSpec = Field(default_factory=ValueSpec)
    rules: RuleSet = Field(default_factory=RuleSet)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    allocation: AllocationSettings = Field(default_factory=AllocationSettings)
    evaluation: EvaluationSettings | None = None
    drivers: int = Field(3, ge=0, le=10)  # the effect's largest drivers named in each sent row's reasons (0: none)
    experiment: str = "omnicrm-nba"
    _compiled: dict[str, list[Rule]] = PrivateAttr(default_factory=dict)
    _cadences: Any = PrivateAttr(default=None)

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
        if self.policy.cadence is not None and self.policy.cadence.channel not in self.channels:
            raise ValueError(f"policy.cadence: channel '{self.policy.cadence.channel}' is not in 'channels'")
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

    def learned_cadences(self) -> Any:
        """``customer_id, recommended_cadence`` on ``policy.cadence.channel`` (read by :func:`load_catalogue`)."""
        if self._cadences is None:
            raise ConfigError(f"catalogue '{self.name}': policy.cadence is set but its table was not loaded")
        return self._cadences

    def consent_column(self, channel: str) -> str:
        """The ``customers`` column holding consent to ``channel``."""
        return self.channels[channel].consent or f"consent_{channel}"

    def compiled_rules(self, action: str) -> list[Rule]:
        """The rules of ``action`` with their DuckDB SQL (set by :func:`load_catalogue`)."""
        return self._compiled[action]

    def used_columns(self) -> set[str]:
        """The columns the compiled rules and the value settings read (which task scores must be computed)."""
        v = self.value
        out = {c for c in (v.column, v.order_value, v.base_rate) if isinstance(c, str)}
        if v.long_term is not None:
            out.add(v.long_term.column)
        for rules in self._compiled.values():
            for rule in rules:
                out |= rule.columns
        return out

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

    __slots__ = ("columns", "kind", "name", "owner", "sql", "text")

    def __init__(self, kind: str, name: str, text: str, owner: str) -> None:
        self.kind, self.name, self.text, self.owner = kind, name, text, owner
        self.sql = ""
        self.columns: frozenset[str] = frozenset()  # the columns the rule names (set when compiled)

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
                hint = difflib.get_close_matches(node.name, sorted(columns), n=1)
                raise ConfigError(
                    f"{where}: unknown column '{node.name}' in '{text}'"
                    + (f" (did you mean '{hint[0]}'?)" if hint else "")
                    + (" (a task score needs its task config under 'scores')" if _looks_like_score(node.name) else "")
                )
            node.set("this", exp.to_identifier(node.name, quoted=True))
    if isinstance(tree, (exp.Column, exp.Literal, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Neg)) and not isinstance(
        tree, exp.Boolean
    ):
        raise ConfigError(f"{where}: '{text}' is not a boolean expression (compare it with something)")
    return tree.sql(dialect="duckdb")


def _looks_like_score(name: str) -> bool:
    return name.startswith(("p_", "pred_"))


def columns_of(rule_sql: str) -> frozenset[str]:
    """The column names a compiled rule reads."""
    return frozenset(c.name for c in sqlglot.parse_one(rule_sql, read="duckdb").find_all(exp.Column))


def load_catalogue(path: str | Path, columns: set[str] | None = None) -> Catalogue:
    """Read and validate a catalogue; compile its rules against ``columns`` (default: the feature columns).

    Without ``columns`` the catalogue is read to make a list, so it needs a ``store``.

    The score columns of the task models under ``scores`` are added to ``columns`` (read from the
    task configs: nothing is scored or loaded from the registry).

    Raises
    ------
    ConfigError
        An unknown key, a bad value, a rule that does not parse or names an unknown column, a task
        config that does not load, a score column that is also a feature column: the message names
        the file, the rule and the column.
    """
    cat = validate_config(Catalogue, read_yaml(path), str(path))
    if columns is None:
        cat.require_store(str(path))  # the feature columns of a list are the store's snapshot
        columns = set(feature_columns(cat, path))
    scored = {c for src in score_sources(cat, path) for c in src.columns}
    clash = sorted(scored & set(columns))
    if clash:
        raise ConfigError(f"{path}: key 'scores': score column(s) {clash} are also feature columns")
    if cat.policy.cadence is not None and cat.store is not None:
        cat._cadences = read_cadences(cat.policy.cadence, str(path))
    return compile_catalogue(cat, set(columns) | scored, str(path))


def read_cadences(spec: LearnedCadence, where: str) -> Any:
    """The learned cadences of ``spec.channel`` from the ``contact_frequency`` table ``spec.table``.

    Raises
    ------
    InputError
        The file is missing or unreadable, lacks a contract column, or has no row for the channel.
    """
    import pandas as pd

    from omnicrm.errors import InputError

    path = Path(spec.table)
    if not path.is_file():
        raise InputError(
            f"{where}: policy.cadence.table {path}: not found (write it with `omnicrm frequency CONFIG --as-of DATE "
            f"--out {path}`)"
        )
    try:
        table = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad input file
        raise InputError(f"{where}: policy.cadence.table {path}: cannot read it ({exc})") from exc
    missing = [c for c in ("customer_id", "channel", "recommended_cadence") if c not in table.columns]
    if missing:
        raise InputError(f"{where}: policy.cadence.table {path}: missing column(s) {missing}")
    rows = table[table["channel"] == spec.channel]
    if rows.empty:
        raise InputError(f"{where}: policy.cadence.table {path}: no row for channel '{spec.channel}'")
    out = rows[["customer_id", "recommended_cadence"]].drop_duplicates("customer_id")
    return out.astype({"recommended_cadence": "int64"}).reset_index(drop=True)


def compile_catalogue(cat: Catalogue, columns: set[str], where: str) -> Catalogue:
    """Compile every rule of ``cat`` against ``columns`` (``where`` names the file in messages); returns ``cat``."""
    long_term = cat.value.long_term.column if cat.value.long_term is not None else None
    for key, col in [
        ("column", cat.value.column),
        ("order_value", cat.value.order_value),
        ("base_rate", cat.value.base_rate),
        ("long_term.column", long_term),
    ]:
        if isinstance(col, str) and col not in columns:
            hint = " (a task score needs its task config under 'scores')" if _looks_like_score(col) else ""
            raise ConfigError(f"{where}: key 'value.{key}': unknown feature or score column '{col}'{hint}")
    for action in cat.actions:
        rules = cat.rules_of(action)
        for rule in rules:
            prefix = "rules" if rule.owner == "catalogue" else f"actions.{action}.rules"
            rule.sql = compile_rule(rule.text, columns, f"{where}: rule {prefix}.{rule.kind}.{rule.name}")
            rule.columns = columns_of(rule.sql)
        cat._compiled[action] = rules
    return cat


def feature_columns(cat: Catalogue, path: str | Path) -> list[str]:
    """The feature columns the catalogue's rules may name (from its feature config; no data read)."""
    from omnicrm.features.config import resolve_feature_config
    from omnicrm.features.snapshot import feature_dtypes

    feats = resolve_feature_config(cat.features, Path(path).parent, f"{path}: key 'features'")
    return [c for c in feature_dtypes(feats) if c not in ("customer_id", "cutoff")]


class ScoredTask:
    """A task config under ``scores``, resolved: its config, version reference and output columns per target.

    ``targets`` maps each declared target's registered model name to its output columns (the task's
    :meth:`~omnicrm.tasks.base.Task.output_columns`); ``columns`` is all of them.
    """

    __slots__ = ("config", "path", "ref", "targets")

    def __init__(self, path: Path, config: Any, ref: str, targets: dict[str, tuple[Any, list[str]]]) -> None:
        self.path, self.config, self.ref, self.targets = path, config, ref, targets

    @property
    def columns(self) -> list[str]:
        """Every output column of every declared target, in target order."""
        return [c for _, cols in self.targets.values() for c in cols]


def score_sources(cat: Catalogue, path: str | Path) -> list[ScoredTask]:
    """The task models ``cat`` lists under ``scores``, with their score column names (no model loaded).

    Raises
    ------
    ConfigError
        A task config that does not load, or two tasks producing the same column.
    """
    from omnicrm.tasks.config import load_task_config

    out: list[ScoredTask] = []
    seen: dict[str, str] = {}
    for i, entry in enumerate(cat.scores):
        src = entry if isinstance(entry, ScoreSource) else ScoreSource(config=entry)
        file = Path(path).parent / src.config
        if not file.is_file():
            raise ConfigError(f"{path}: key 'scores[{i}]': task config {file} does not exist")
        cfg = load_task_config(file)
        targets = {}
        for target in cfg.task.declared_targets():
            cols = cfg.task.output_columns(target)
            for c in cols:
                if c in seen:
                    raise ConfigError(f"{path}: key 'scores[{i}]': column '{c}' comes from {seen[c]} already")
                seen[c] = str(file)
            targets[cfg.registered_name(target)] = (target, cols)
        out.append(ScoredTask(file, cfg, src.model, targets))
    return out
