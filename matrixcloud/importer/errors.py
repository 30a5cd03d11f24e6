"""Why an import from the original cannot go ahead."""

from __future__ import annotations


class ImportFailed(Exception):
    """The source, its key or our database stops the import; nothing has been written.

    The message says what is wrong and what to do (which file, which variable).
    """


class ImportRefused(ImportFailed):
    """Rows of the source collide with rows here that it did not import; nothing has been
    written. ``lines`` is the report, which lists every collision."""

    def __init__(self, message: str, lines: list[str]) -> None:
        super().__init__(message)
        self.lines = lines
