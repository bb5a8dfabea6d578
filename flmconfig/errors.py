"""The one base class of flm's own errors."""


class FlmError(Exception):
    """Something the user can fix: a bad config, input file, checkpoint or argument.

    The message names the file, line, field or key at fault. The CLI shows it as one line; any other
    exception is a bug and keeps its traceback.
    """
