"""The `clipablate` command: one entry point for every stage (see clipablate/cli.py)."""
