"""Third-party notices a user cannot act on: listed once, switched off by :func:`apply`.

omnicrm's own modules change nothing when imported (a test imports every one of them and compares
the warning filters, the loggers and the environment before and after). The process-wide settings
below are applied instead by whoever owns the process: the command line, at the start of every
command, and the test configuration (``tests/conftest.py``, which also turns :data:`WARNINGS` into
pytest ``filterwarnings`` lines, so that ``filterwarnings = error`` fails on anything else). A
notebook or script that wants the command line's quiet output calls :func:`apply` itself.

The one import-time setting left in omnicrm is ``OMP_WAIT_POLICY`` in ``omnicrm/__init__.py``: it
must be in the environment before OpenMP loads, and its docstring gives the measurement.

Each entry says where the notice comes from and why nobody can act on it. An entry whose notice no
longer appears should be removed: the tests run with warnings as errors and show which ones are
still needed.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from types import ModuleType


@dataclass(frozen=True)
class KnownWarning:
    """A third-party warning ignored by the command line and the tests.

    Parameters
    ----------
    message : str
        Regular expression matched, case-insensitively, at the start of the warning's text (as in
        :func:`warnings.filterwarnings`). It holds no ``:``, which separates the fields of a pytest
        filter.
    category : type[Warning]
        The warning's class; subclasses match too.
    reason : str
        Where the warning comes from and why a user cannot act on it.
    """

    message: str
    category: type[Warning]
    reason: str

    def pytest_filter(self) -> str:
        """Spell the filter as a pytest ``filterwarnings`` line (``ignore:message:category``).

        Returns
        -------
        str
            The line, with the category spelled so that pytest can import it.
        """
        c = self.category
        name = c.__qualname__ if c.__module__ == "builtins" else f"{c.__module__}.{c.__qualname__}"
        return f"ignore:{self.message}:{name}"


@dataclass(frozen=True)
class LoggerSetting:
    """A level, or messages to drop, for one third-party logger.

    Parameters
    ----------
    logger : str
        The logger's name.
    package : str
        The package that owns the logger. mlflow and optuna set their loggers' levels while they are
        imported, so a level set earlier would be lost: the setting is applied right after the
        package's import (or at once, if it is imported already).
    reason : str
        What the logger says and why a user need not read it.
    level : int or None
        The least severe level shown; ``None`` leaves the level as it is.
    drop : str or None
        Records whose message contains this text are dropped.
    """

    logger: str
    package: str
    reason: str
    level: int | None = None
    drop: str | None = None

    def apply(self) -> None:
        """Set the level and the filter on the logger (both idempotent)."""
        logger = logging.getLogger(self.logger)
        if self.level is not None:
            logger.setLevel(self.level)
        if self.drop is not None:
            logger.addFilter(_DropMessages(self.drop))


#: environment defaults (``os.environ.setdefault``: a value the user set wins), name -> (value, reason)
ENVIRONMENT: dict[str, tuple[str, str]] = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": (
        "false",
        "mlflow draws a tqdm 'Downloading artifacts' bar whenever a registered model is loaded "
        "(omnicrm predict, promote); it breaks the command's own progress bar and fills logs",
    ),
    "MLFLOW_DISABLE_TELEMETRY": (
        "true",
        "mlflow sends usage telemetry by default; omnicrm's runs and models stay on the machine",
    ),
}

#: warnings ignored by the command line (every other warning is shown once as a "warning:" line)
#: and by the tests (every other warning is an error)
WARNINGS: tuple[KnownWarning, ...] = (
    KnownWarning(
        "The ``noload`` loader strategy is deprecated",
        DeprecationWarning,
        "SQLAlchemy 2.1 deprecates a loader strategy that mlflow's SQL tracking store uses "
        "(mlflow/store/tracking/dbmodels/models.py); raised whenever a tracking store is opened",
    ),
    KnownWarning(
        "Operation with range is deprecated",
        DeprecationWarning,
        "pandas 3 (a Pandas4Warning) about an operation inside mlflow's input-example check "
        "(mlflow/models/utils.py); raised on every model logged with an input example",
    ),
    KnownWarning(
        ".*Any type hint is inferred as AnyType",
        UserWarning,
        "mlflow.pyfunc, when first imported, infers a schema from its own pydantic models "
        "(mlflow/types/responses.py) and warns about one of their fields; the text starts with ANSI "
        "colour codes, hence the leading '.*'",
    ),
    KnownWarning(
        "PySpark does not yet fully support pandas >= 3",
        FutureWarning,
        "pyspark 4 (the spark extra) on every pandas conversion (toPandas, createDataFrame, applyInPandas) "
        "while pandas is 3.x, which omnicrm requires; the scoring job's Spark engine is checked against the "
        "DuckDB engine row by row (tests/spark/test_score_spark.py)",
    ),
)

#: logger levels and filters
LOGGERS: tuple[LoggerSetting, ...] = (
    LoggerSetting(
        "mlflow",
        "mlflow",
        "mlflow logs every table it creates in a new tracking database and a 'View run' link per "
        "run at INFO; the commands print their own summary",
        level=logging.WARNING,
    ),
    LoggerSetting(
        "mlflow.pyfunc",
        "mlflow",
        "mlflow warns on every pyfunc model logged from a Python object that the object is pickled "
        "with CloudPickle; omnicrm stores its models that way on purpose (with a signature and "
        "pinned requirements)",
        drop="CloudPickle",
    ),
    LoggerSetting(
        "optuna",
        "optuna",
        "optuna logs every trial at INFO; the command's progress shows the trials, and the study "
        "and its trials are in MLflow",
        level=logging.WARNING,
    ),
)


def apply() -> None:
    """Switch off the known notices: environment defaults, logger settings and warning filters.

    Idempotent; the warning filters go to the front of the current filter list, so inside a
    :class:`warnings.catch_warnings` block they last as long as the block.
    """
    for name, (value, _) in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    for setting in LOGGERS:
        _AFTER_IMPORT.add(setting.package, setting.apply)
    ignore_known_warnings()


def ignore_known_warnings(known: Sequence[KnownWarning] = WARNINGS) -> None:
    """Add an ``ignore`` filter for each known warning.

    Parameters
    ----------
    known : sequence of KnownWarning
        The warnings to ignore (default: :data:`WARNINGS`).
    """
    for w in known:
        warnings.filterwarnings("ignore", message=w.message, category=w.category)


def pytest_filters() -> list[str]:
    """:data:`WARNINGS` as pytest ``filterwarnings`` lines, for the test configuration.

    Returns
    -------
    list of str
        One ``ignore:message:category`` line per known warning.
    """
    return [w.pytest_filter() for w in WARNINGS]


class _DropMessages(logging.Filter):
    """Drops log records whose message contains ``text``; equal to any other with the same text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()

    def __eq__(self, other: object) -> bool:  # logging.Filterer.addFilter skips a filter already present
        return isinstance(other, _DropMessages) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs actions right after a package's first import, without importing it.

    A finder at the front of ``sys.meta_path`` that finds nothing itself: asked for a package that
    has actions waiting, it lets the other finders locate the package and wraps the loader's
    ``exec_module``, so the actions run once the package's ``__init__`` has run. This is how a
    logger level outlives mlflow's and optuna's own set-up at import, while neither is imported
    before a command needs it (mlflow alone takes about 2.5 s to import).
    """

    def __init__(self) -> None:
        self._waiting: dict[str, list[Callable[[], None]]] = {}

    def add(self, package: str, action: Callable[[], None]) -> None:
        """Run ``action`` now if ``package`` is imported, else right after its import."""
        if package in sys.modules:
            action()
            return
        actions = self._waiting.setdefault(package, [])
        if action not in actions:
            actions.append(action)
        if self not in sys.meta_path:
            sys.meta_path.insert(0, self)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        """Find nothing; for a package with waiting actions, wrap the loader the other finders give."""
        actions = self._waiting.pop(fullname, None)
        if actions is None:
            return None
        spec = importlib.util.find_spec(fullname)  # the other finders: this one no longer knows the name
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            for action in actions:
                action()

        loader.exec_module = exec_module  # type: ignore[method-assign] - this package's own loader object
        return spec


_AFTER_IMPORT = _AfterImport()
