"""What the Runs and Results pages show of a run folder: read from the files `weitiao train` writes, so a run
started from the CLI shows up as one started from the UI does."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from weitiao.errors import WeitiaoError
from weitiao.runs import RUN_FILE


def run_folders(root: Path, depth: int = 2) -> list[Path]:
    """Every run folder (one holding run.json) under `root`, `depth` levels down, newest first."""
    found = []
    for level in range(1, depth + 1):
        found += [p.parent for p in root.glob("/".join(["*"] * level) + "/" + RUN_FILE)
                  if ".weitiao-ui" not in p.parts]
    return sorted(found, key=lambda p: (p / RUN_FILE).stat().st_mtime, reverse=True)


def resolve(root: Path, name: str) -> Path:
    """The run folder `name` (relative to root); an error for anything outside root or not a run."""
    path = (root / name).resolve()
    if root.resolve() not in path.parents or not (path / RUN_FILE).is_file():
        raise WeitiaoError(f"run {name!r}: not a run folder under {root}")
    return path


def resolve_any(root: Path, name: str) -> Path:
    """The folder a run named `name` has or will have (a job may not have created it yet), inside root."""
    path = (root / name).resolve()
    if root.resolve() not in path.parents:
        raise WeitiaoError(f"run {name!r}: not under {root}")
    return path


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def summary(root: Path, folder: Path) -> dict:
    """The line the Runs page shows: name, status, task, method, model, step and the test results."""
    state = read_json(folder / RUN_FILE)
    try:
        cfg = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        cfg = {}
    metrics = read_json(folder / "metrics.json")
    test = metrics.get("test") or {}
    return {"name": str(folder.relative_to(root)), "status": state.get("status", "unknown"),
            "reason": state.get("reason"), "task": cfg.get("task", "sft"),
            "method": (cfg.get("method") or {}).get("name"), "model": (cfg.get("model") or {}).get("name_or_path"),
            "started": state.get("started"), "finished": state.get("finished"),
            "base": test.get("base"), "tuned": test.get("tuned"), "rows": test.get("rows"),
            "report": (folder / "report" / "report.html").is_file()}


def starting(root: Path, folder: Path) -> dict:
    """The summary of a run whose job has started but has not written its folder yet."""
    return {"name": str(folder.relative_to(root.resolve())), "status": "starting", "reason": None, "task": None,
            "method": None, "model": None, "started": None, "finished": None, "base": None, "tuned": None,
            "rows": None, "report": False}


def losses(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """{"train": [(step, loss)], "val": [...]}: live from the TensorBoard event files while the run trains,
    from trainer_state.json once it has finished (a run with `train.report_to: none` shows its curve then)."""
    state = read_json(folder / "trainer_state.json")
    if state.get("log_history"):
        history = state["log_history"]
        return {"train": [(h["step"], h["loss"]) for h in history if "loss" in h],
                "val": [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]}
    logs = folder / "logs"
    if not logs.is_dir():
        return {"train": [], "val": []}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logs), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags().get("scalars", [])
    return {name: [(e.step, e.value) for e in events.Scalars(tag)] if tag in tags else []
            for name, tag in (("train", "train/loss"), ("val", "eval/loss"))}


def curve_svg(points: dict[str, list[tuple[int, float]]], width: int = 560, height: int = 220) -> str:
    """The loss curve as an inline SVG: train loss as a line (and dots, when there are few), validation loss as
    larger dots, steps on x."""
    every = points["train"] + points["val"]
    if not every:
        return '<p class="muted">no loss logged yet</p>'
    (x0, x1), (y0, y1) = (min(s for s, _ in every), max(s for s, _ in every)), \
        (min(v for _, v in every), max(v for _, v in every))
    sx = lambda s: 40 + (s - x0) / max(x1 - x0, 1) * (width - 50)  # noqa: E731
    sy = lambda v: 10 + (y1 - v) / max(y1 - y0, 1e-9) * (height - 40)  # noqa: E731
    line = " ".join(f"{sx(s):.1f},{sy(v):.1f}" for s, v in points["train"])
    dots = "".join(f'<circle cx="{sx(s):.1f}" cy="{sy(v):.1f}" r="4" class="val"/>' for s, v in points["val"])
    dots += "".join(f'<circle cx="{sx(s):.1f}" cy="{sy(v):.1f}" r="2.5" class="train-dot"/>'
                    for s, v in points["train"]) if len(points["train"]) < 40 else ""  # a few points: show each
    return (f'<svg class="curve" viewBox="0 0 {width} {height}" role="img" aria-label="loss curve">'
            f'<polyline points="{line}" class="train"/>{dots}'
            f'<text x="40" y="{height - 8}">step {x0}</text><text x="{width - 80}" y="{height - 8}">step {x1}</text>'
            f'<text x="2" y="16">{y1:.3f}</text><text x="2" y="{height - 30}">{y0:.3f}</text></svg>')
