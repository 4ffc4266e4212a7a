"""The one error type that operators turn into a report."""


class EngineError(Exception):
    """A failure to show the user as it is: one message saying what happened and what to do."""
