"""The one error type the CLI turns into ``ctx: error: <message>`` and exit 2."""


class UserError(ValueError):
    """A problem the user can fix (a bad value, file or folder); the message is
    one line naming the bad value and what would be accepted."""
