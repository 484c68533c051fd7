"""Replicate: the HTTP client and its errors, webhook verification, outputs and progress."""
