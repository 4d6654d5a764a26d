"""Prediction tasks: churn, next_purchase, clv and propensity on point-in-time training frames."""
