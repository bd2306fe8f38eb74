"""neurocast.models."""
