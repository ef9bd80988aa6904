"""Exit codes of every subcommand."""

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 3
EXIT_INTERRUPTED = 130
"""Ctrl-C outside a running mission (a running one is cancelled: EXIT_CANCELLED); 128 + SIGINT, as shells report."""
EXIT_BROKEN_PIPE = 141
"""The reader of the output went away (`controlplane logs m | head`); 128 + SIGPIPE, as tools killed by it exit."""
