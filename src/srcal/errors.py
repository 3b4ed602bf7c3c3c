"""The error a stage raises when it cannot run or did not finish.

Its own module (not ``srcal.stages``) because every stage module raises it while ``srcal.stages`` loads
the stage modules: importing it from the runner would tie each stage to the table that names it.
"""


class StageError(RuntimeError):
    """A stage that cannot run or did not finish; the message says what to change."""
