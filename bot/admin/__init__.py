"""The admin page (/admin): spend, jobs, quotas and the audit trail, behind CONJURE_ADMIN_TOKEN."""
