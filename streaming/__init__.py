"""Sources, ring buffer, windows, online preprocessing and the decode loop."""
