"""The one exception type for bad input.

Library code raises `BadInputError` when what the user gave (a path, a file, a model, an option)
cannot be used. Its message is one line that names the problem and the fix; the CLI prints it and
exits with code 2. Anything else that escapes is a bug and keeps its traceback.
"""


class BadInputError(Exception):
    """User input that cannot be used; the message says what is wrong and how to fix it."""
