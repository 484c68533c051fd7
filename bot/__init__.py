"""Conjure's platform-free core: configuration, catalog, Replicate client, jobs and the web app."""
