"""The one exception type for bad user input: the CLI prints its message on one line and exits non-zero."""


class UserError(Exception):
    """Input we refuse (bad path, bad value, inconsistent data). The message is shown to the user as is."""
