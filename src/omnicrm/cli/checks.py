"""Checks of command-line inputs that run before any work starts.

The output paths (:func:`omnicrm.store.outputs.check_output_path`) and a store's date range
(:func:`omnicrm.store.check_date`) are checked by the layers that own them; the checks here are the
command line's own: options that name a folder or a date only the commands take.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from omnicrm.errors import InputError


def check_truth(truth: Path) -> None:
    """Refuse a ``--truth`` that is not a synthetic world's truth folder.

    Parameters
    ----------
    truth : pathlib.Path
        The folder given to ``omnicrm ingest --truth``.

    Raises
    ------
    InputError
        If it is not a folder, or holds no ``record_owner.parquet``.
    """
    if not truth.is_dir():
        raise InputError(
            f"--truth {truth}: {'not a folder' if truth.exists() else 'no such folder'}; "
            "give a synthetic world's truth folder (e.g. data/world/truth)"
        )
    if not (truth / "record_owner.parquet").is_file():
        raise InputError(
            f"--truth {truth}: no record_owner.parquet in it; give a synthetic world's truth folder "
            "(e.g. data/world/truth)"
        )


def check_as_of(store: str, as_of: datetime) -> None:
    """Check the far side of ``--as-of`` for ``recommend`` and ``effects`` (:func:`omnicrm.store.check_date`).

    Their own messages already say what an early date leaves them without ("no purchases before
    ..."), so only a date long after the store's last event is refused (and a late one warned of).

    Parameters
    ----------
    store : str
        The store the command reads.
    as_of : datetime.datetime
        The ``--as-of`` date.
    """
    from omnicrm.store import check_date, store_data_range

    check_date(as_of, store_data_range(store), "--as-of", before_first=True)
