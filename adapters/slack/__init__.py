"""Slack: bolt listener, adapter, markup, app manifest, and the lifecycle that runs them."""
