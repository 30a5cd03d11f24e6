"""Why an import from the original cannot go ahead."""

from __future__ import annotations


class ImportFailed(Exception):
    """The source, its key or our database stops the import; nothing has been written.

    The message says what is wrong and what to do (which file, which variable).
    """
