"""The exception types a user sees: the CLI prints the message on one line and exits with
``exit_code`` (2 for a problem with the input or the setup)."""

import os


class TildekitError(Exception):
    """A problem with the user's input or environment, with what to do about it."""

    exit_code = 2


class DeviceUnavailable(TildekitError):
    """The sound card cannot be opened (missing, busy, no such rate). Its own exit code
    (EX_UNAVAILABLE, 69) lets a service manager retry it a bounded number of times, while a
    configuration error (2) is not retried."""

    exit_code = os.EX_UNAVAILABLE
