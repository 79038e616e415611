"""User-facing errors.

Anything the user can fix (config, data, paths) raises a subclass of `WeitiaoError`. The CLI prints its message
and exits non-zero without a traceback; every other exception is a bug in weitiao and keeps its traceback.
"""
from __future__ import annotations

import errno


class WeitiaoError(Exception):
    """An error caused by the user's input; `str(err)` is the whole message shown to the user."""

    exit_code = 2


class ConfigError(WeitiaoError):
    """One or more problems in a config file; all of them are listed together."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid config {source}: {len(self.problems)} problem(s)\n{lines}")


class DataError(WeitiaoError):
    """Problems in a data file, each naming the file and the line or row."""

    def __init__(self, problems: list[str], total: int | None = None):
        self.problems = list(problems)
        shown = "\n".join(f"  - {p}" for p in self.problems)
        more = ""
        if total is not None and total > len(self.problems):
            more = f"\n  ... and {total - len(self.problems)} more"
        head = "bad data row" if len(self.problems) == 1 and not more else "bad data rows"
        super().__init__(f"{head}:\n{shown}{more}")


class ModelNotFoundError(WeitiaoError):
    """The configured model cannot be found locally."""


class UnsafeWeightsError(WeitiaoError):
    """The model's weights are in a format that can run code when loaded (pickle)."""


class Interrupted(WeitiaoError):
    """The user pressed Ctrl-C; a checkpoint was saved."""

    exit_code = 130


def disk_full_error(err: BaseException) -> bool:
    """Whether a write error says the disk is full: an OSError with ENOSPC/EDQUOT, or an error that is not an
    OSError but carries the operating system's message (safetensors' SafetensorError)."""
    return (getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
            or "No space left on device" in str(err) or "Disk quota exceeded" in str(err))
