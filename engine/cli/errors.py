"""The CLI's one error type: bad input from the user."""


class UsageError(Exception):
    """Bad input from the user: exit code 2, message printed as one line."""
