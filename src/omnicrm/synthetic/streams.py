"""Named, independent random streams derived from the world seed.

Each part of the generator draws from its own stream (``stream(seed, "people")``), so changing how
one part draws numbers does not shift every other part: same seed and config give identical files,
and a change stays local to the part that changed.
"""

from __future__ import annotations

import zlib

import numpy as np


def stream(seed: int, name: str) -> np.random.Generator:
    """Return the random generator of the stream ``name`` for ``seed``.

    Parameters
    ----------
    seed
        The world seed (``WorldConfig.seed``).
    name
        Name of the stream, e.g. ``"people"`` or ``"mess/crm_members"``.

    Returns
    -------
    numpy.random.Generator
        A PCG64 generator seeded by ``(seed, crc32(name))``.
    """
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
