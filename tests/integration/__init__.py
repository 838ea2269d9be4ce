"""Real components in-process: chDB, promtool, a local webhook receiver, the CLI."""
