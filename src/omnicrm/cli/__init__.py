"""The ``omnicrm`` command line: a thin layer over ``omnicrm.pipeline``.

Modules:

* :mod:`~omnicrm.cli.app`: the command group and the one error handler every command runs inside
  (exit statuses, the error log, ``--debug``, SIGTERM, warnings);
* the commands, one module per stage, registered here in data-flow order (the order of
  ``omnicrm --help``): :mod:`~omnicrm.cli.foundation` (generate, ingest, features),
  :mod:`~omnicrm.cli.models` (train, tune, promote, predict), :mod:`~omnicrm.cli.recommend`
  (recommend-eval, recommend), :mod:`~omnicrm.cli.uplift` (uplift, effects, readout),
  :mod:`~omnicrm.cli.nba` (nba), :mod:`~omnicrm.cli.frequency` (frequency), :mod:`~omnicrm.cli.score`
  (score), :mod:`~omnicrm.cli.report` (report),
  :mod:`~omnicrm.cli.ui` and :mod:`~omnicrm.cli.demo`;
* :mod:`~omnicrm.cli.render`: what the commands print (progress, tables), on a terminal and in a log;
* :mod:`~omnicrm.cli.checks`: checks of command-line inputs made before any work.

A command imports the pipeline only when it runs, so ``omnicrm --help`` and the start of every
command stay fast. The console script is :func:`omnicrm.entry.main`.
"""

# importing a command module registers its commands: these lines set their order in ``omnicrm --help``
from omnicrm.cli import foundation  # noqa: F401, I001
from omnicrm.cli import models  # noqa: F401
from omnicrm.cli import recommend  # noqa: F401
from omnicrm.cli import uplift  # noqa: F401
from omnicrm.cli import nba  # noqa: F401
from omnicrm.cli import frequency  # noqa: F401
from omnicrm.cli import score  # noqa: F401
from omnicrm.cli import report  # noqa: F401
from omnicrm.cli import ui  # noqa: F401
from omnicrm.cli import demo  # noqa: F401
from omnicrm.cli.app import INTERRUPT_REPORTED, app

__all__ = ["INTERRUPT_REPORTED", "app"]
