"""The one exception type for bad input.

Library code raises `BadInputError` when what the user gave (a path, a file, a model, an option)
cannot be used. Its message is one line that names the problem and the fix; the CLI prints it and
exits with code 2. Anything else that escapes is a bug and keeps its traceback.
"""


class BadInputError(Exception):
    """User input that cannot be used; the message says what is wrong and how to fix it."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type when the message is empty)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
