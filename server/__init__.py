"""neurocast.server."""
