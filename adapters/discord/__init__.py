"""Discord: command tree, listener, adapter, markup, and the gateway lifecycle that runs them."""
