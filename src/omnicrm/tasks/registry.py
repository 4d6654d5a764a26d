"""The registry of prediction tasks: ``task.kind`` in a config -> the task class (:mod:`omnicrm.tasks.base`).

Adding a task is one module implementing :class:`~omnicrm.tasks.base.Task` and one entry here.
:func:`registered` adds tasks for the length of a ``with`` block (a test's or a notebook's own task)
and removes them afterwards.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager

from omnicrm.tasks.base import Task
from omnicrm.tasks.churn import Churn
from omnicrm.tasks.clv import Clv
from omnicrm.tasks.next_purchase import NextPurchase
from omnicrm.tasks.propensity import Propensity

#: every task a config may name, by its ``kind``
TASKS: dict[str, type[Task]] = {
    Churn.name: Churn,
    NextPurchase.name: NextPurchase,
    Clv.name: Clv,
    Propensity.name: Propensity,
}


def unknown_kind(kind: object) -> str:
    """The message for a ``task.kind`` that names no registered task (allowed values, a close match).

    Parameters
    ----------
    kind : object
        What the config gave.

    Returns
    -------
    str
    """
    allowed = "{" + ", ".join(repr(k) for k in sorted(TASKS)) + "}"
    hint = difflib.get_close_matches(str(kind), list(TASKS), n=1)
    return f"must be one of {allowed}; got {kind!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")


@contextmanager
def registered(*tasks: type[Task]) -> Iterator[None]:
    """Add task classes to :data:`TASKS` inside a ``with`` block; they are removed when it ends.

    Parameters
    ----------
    *tasks : type of Task
        Each with a ``name`` not yet registered.

    Raises
    ------
    ValueError
        A task without a name, or one whose name is taken.
    """
    for task in tasks:
        if not task.name:
            raise ValueError(f"{task.__name__} has no 'name': set the class attribute to its config kind")
        if task.name in TASKS:
            raise ValueError(f"a task named {task.name!r} is registered already ({TASKS[task.name].__name__})")
    added = []
    try:
        for task in tasks:
            TASKS[task.name] = task
            added.append(task.name)
        yield
    finally:
        for name in added:
            TASKS.pop(name, None)
