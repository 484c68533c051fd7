"""Entry points: the `conjure` command (serve, demo, sandbox, migrate, manifest) and its
operator commands (quota, report)."""
