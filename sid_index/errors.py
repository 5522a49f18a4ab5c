"""User-facing errors: one line that names the file, the row and the problem.

The CLI prints these without a traceback; anything else escaping is a bug.
"""

from __future__ import annotations

from pathlib import Path


class RadgrError(Exception):
    """An error caused by the user's input or environment, reported as one line."""


class DataError(RadgrError):
    """Bad input data: names the file and, when known, the row (1-based) and the column."""

    def __init__(self, path: str | Path, message: str, row: int | None = None, column: str | None = None):
        self.path = str(path)
        self.row = row
        self.column = column
        self.problem = message
        where = self.path
        if row is not None:
            where += f":{row}"
        if column is not None:
            message = f"column '{column}': {message}"
        super().__init__(f"{where}: {message}")


class IndexFormatError(RadgrError):
    """A Semantic-ID index directory that is missing, damaged or of another version."""


def make_config(cls, what: str, flags: dict[tuple[str, ...], str] | None = None, **options):
    """Build a pydantic config from CLI options; a bad value becomes one RadgrError line naming the flags
    (`flags`: field path -> option name, for options named otherwise than their path)."""
    from pydantic import ValidationError

    try:
        return cls(**options)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            names = tuple(str(x) for x in err["loc"] if isinstance(x, str))
            cut = next((n for n in range(len(names), 0, -1) if names[:n] in (flags or {})), 0)
            if not cut and any(path[:len(names)] == names for path in flags or {}):
                names = ()  # a check of a whole flattened group (e.g. two of its options disagree)
            names = ((flags[names[:cut]],) if cut else ()) + names[cut:]
            flag = "--" + "-".join(names).replace("_", "-")
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"{flag}: {msg}" if flag != "--" else msg)
        raise RadgrError(f"invalid {what} settings: " + "; ".join(parts)) from None
