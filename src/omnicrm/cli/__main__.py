"""``python -m omnicrm.cli``: the same as the ``omnicrm`` console script."""

from omnicrm.entry import main

main()
