"""The one exception type for bad input: the CLI prints its message (no traceback) and exits with status 2."""


class UserError(Exception):
    """Bad input the user can fix. The message names the file, key or column and what was expected."""
