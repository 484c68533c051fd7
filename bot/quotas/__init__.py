"""Quotas and budgets: limits, their windows (days, months), reservations and reports."""
