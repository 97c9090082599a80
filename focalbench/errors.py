"""Errors that the CLI turns into a one-line message and exit code 2 (bad input: usage, config,
files)."""


class InputError(ValueError):
    """Bad user input: a config value, an option, a file. The message names the field and the valid
    choices."""
