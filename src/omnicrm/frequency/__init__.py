"""Contact frequency learned, not only capped: the value of each cadence per customer.

From a randomised cadence experiment (members randomised to a number of contacts per four weeks),
a dose model estimates per customer what each cadence does to opens, unsubscribes and margin; the
value of a cadence is its margin net of the cost of unsubscribes (the lost future value of a
contactable customer, from CLV). Per customer and channel the best cadence (never above the hard
maximum, 0 without consent) is classed saturated / on target / under-saturated against the current
one, with the expected gain of moving there (the ``contact_frequency`` output table).

Modules: ``config`` (the typed config), ``data`` (experiment rows and the population from the store),
``estimate`` (the dose model and the pricing of unsubscribes), ``recommend`` (the table and
features), ``evaluate`` (cross-fitted, off-policy and true values of policies; the class confusion),
``plots`` (value against cadence per class). Wiring: :mod:`omnicrm.pipeline.frequency`.
"""
