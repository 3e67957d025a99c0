"""The error a study raises for a mistake in what it was given, naming the argument at fault."""


class StudyError(ValueError):
    """A bad argument of a study (``model``, ``sentences``, ``images``, ``image_size``, ``out``,
    ``device``, ...): the message says what is wrong and what to do; ``argument`` names it."""

    def __init__(self, argument: str, message: str):
        super().__init__(message)
        self.argument = argument
