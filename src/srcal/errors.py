"""Errors raised in more than one module, each with a message that says what to change.

Their own module because the raisers and the catchers sit in different layers: every stage module raises
``StageError`` while ``srcal.stages`` loads the stage modules (importing it from the runner would tie each
stage to the table that names it), and ``ServeError`` comes from KServe and from local server processes.
"""


class StageError(RuntimeError):
    """A stage that cannot run or did not finish; the message says what to change."""


class ServeError(RuntimeError):
    """The judge endpoint could not be created or did not become ready; the message says why."""
