class UserError(Exception):
    """A problem the user can fix; its message says what and how, in one line."""
