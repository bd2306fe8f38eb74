"""neurocast.clients."""
