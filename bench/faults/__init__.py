"""The fault suite of issue 11: conjure serve killed at each step of a job, and storms."""
