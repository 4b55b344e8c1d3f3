"""The HTTP API, the CLI, and generation at request time."""
