"""User-facing errors.

Every problem a user can fix (bad input, missing data, a typo in a config) is raised as a
`ConvbenchError` whose message is one line naming the problem and the fix. The CLI prints that line
and exits with status 2 instead of showing a traceback.
"""


class ConvbenchError(Exception):
    """A problem the user can fix; its message says what is wrong and how to fix it."""
