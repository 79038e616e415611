"""What the New run page asks before anything trains: `weitiao data check` and the memory guard, on the form's
config, in the UI's process (neither loads weights)."""
from __future__ import annotations

import contextlib
import io
import json
import tempfile
import threading
from pathlib import Path

from weitiao.errors import WeitiaoError

CHECK_LOCK = threading.Lock()  # a data check prints its report, captured here: one at a time


def data_check(cfg) -> dict:
    """`weitiao data check` on the form's config: its JSON report and its printed text (with the trained tokens
    of the preview marked ⟦ ⟧)."""
    from weitiao.workflows import data_check as checking

    with tempfile.TemporaryDirectory() as tmp, CHECK_LOCK:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = checking.run(cfg, preview=2, out=str(Path(tmp) / "check.json"))
        report = json.loads((Path(tmp) / "check.json").read_text(encoding="utf-8"))
    text = printed.getvalue().replace("(trained tokens in ⟦ ⟧)", "(trained tokens highlighted)")
    return {"ok": code == 0, "report": report, "text": text.split("\nwrote ")[0]}  # not the temporary file


def memory_estimate(cfg) -> dict:
    """The memory guard's estimate for the form's config (no weights loaded), and the planner's advice when it
    does not fit."""
    from weitiao.memory import guard
    from weitiao.models.loading import pick_device
    from weitiao.models.resolve import find_model

    lines: list[str] = []
    _, folder, _, _ = find_model(cfg)
    try:
        estimate = guard.check(cfg, folder, pick_device(cfg.model.device), cfg.data.max_length, lines.append)
    except WeitiaoError as err:
        return {"fits": False, "lines": lines, "advice": str(err)}
    return {"fits": True, "lines": lines, "total_gib": round(estimate["total"] / 2**30, 3) if estimate else None}
