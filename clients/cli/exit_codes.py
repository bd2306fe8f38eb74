"""Exit codes of the ``neurocast`` command line."""

EXIT_OK = 0
"""Success."""
EXIT_FAILURE = 1
"""Failure at run time: an unreachable server, a failed job."""
EXIT_USAGE = 2
"""Bad usage or unreadable input."""
EXIT_INTERRUPTED = 130
"""Interrupted (Ctrl-C)."""
