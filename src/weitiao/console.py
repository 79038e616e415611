"""What a run prints: progress lines (rank 0 alone in a multi-process run) and the fixed-width metrics table."""
from __future__ import annotations

import os


def log(msg: str) -> None:
    """Print a progress line; in a multi-process run, rank 0 alone prints (the others would repeat it)."""
    if os.environ.get("RANK", "0") == "0":
        print(msg, flush=True)


def comparison_table(title: str, columns: dict[str, dict]) -> str:
    """A fixed-width table of metrics, one column per model; with two columns, a change column is added."""
    names = list(columns)
    keys = list(columns[names[-1]])
    width = max(len(title), *(len(k) for k in keys)) + 2
    header = f"{title:<{width}}" + "".join(f"{n:>10}" for n in names) + (f"{'change':>10}" if len(names) == 2 else "")
    lines = [header]
    for k in keys:
        values = [columns[n].get(k) for n in names]
        cells = "".join(f"{v:>10.4f}" if v is not None else f"{'-':>10}" for v in values)
        if len(values) == 2 and None not in values:
            cells += f"{values[1] - values[0]:>+10.4f}"
        lines.append(f"{k:<{width}}{cells}")
    return "\n".join(lines)
