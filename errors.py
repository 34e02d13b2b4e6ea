"""The one exception type a user sees: the CLI prints its message on one line and exits 2."""


class TildekitError(Exception):
    """A problem with the user's input or environment, with what to do about it."""
