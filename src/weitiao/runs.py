"""The run folder: deciding whether to start, resume or refuse, and the files that make a run describe itself
(status, resolved config, versions, chat template, data report, predictions, loss curve).

Every workflow writes its folder through these, and `chat`, `serve`, `export` and `compare` read it back.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from weitiao.config import Config, dump_config, resolved
from weitiao.console import log
from weitiao.data.templates import ChatTemplate
from weitiao.errors import WeitiaoError
from weitiao.training.tracking import log_results

RUN_FILE = "run.json"  # {"status": "running" | "finished", ...}: marks a folder as a weitiao run


def versions() -> dict:
    import importlib.metadata as md

    import torch

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("weitiao", "torch", "transformers", "peft", "trl", "accelerate", "datasets", "tokenizers",
                "safetensors"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    out["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    return out


def write_run_files(out_dir: Path, cfg: Config, template, report: dict, skipped: list | None) -> None:
    """What makes a run folder describe itself from its start: status, resolved config, versions, chat template,
    data report, where the model and data came from (sources.json: a hub id's commit, a hub dataset's commit and
    split), and the rows skipped."""
    write_json(out_dir / RUN_FILE, {"status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    (out_dir / "config.yaml").write_text(dump_config(resolved(cfg)), encoding="utf-8")
    write_json(out_dir / "versions.json", versions())
    if template is not None:  # a classifier or a reward model has no chat template to record
        (out_dir / "chat_template.jinja").write_text(template.jinja, encoding="utf-8")
        write_json(out_dir / "template.json", template.describe())
    write_json(out_dir / "data_report.json", report)
    write_json(out_dir / "sources.json", {"model": report.get("model_source"),
                                          "data": {name: report.get(f"{name}_files", [])
                                                   for name in ("train", "val", "test")}})
    if skipped is not None:
        (out_dir / "skipped_rows.jsonl").write_text(
            "".join(json.dumps(b.as_dict(), ensure_ascii=False) + "\n" for b in skipped), encoding="utf-8")


def run_state(out_dir: Path) -> str:
    """'absent' (missing or empty), 'finished', 'unfinished' (a weitiao run that did not end), or 'foreign'."""
    if not out_dir.exists() or (out_dir.is_dir() and not any(out_dir.iterdir())):
        return "absent"
    run_file = out_dir / RUN_FILE
    if not out_dir.is_dir() or not run_file.is_file():
        return "foreign"
    try:
        status = json.loads(run_file.read_text()).get("status")
    except (json.JSONDecodeError, OSError):
        return "unfinished"
    return "finished" if status == "finished" else "unfinished"


def check_output_dir(out_dir: Path, overwrite: bool, resume: bool) -> str:
    """Decide what to do with the output folder before anything is written; returns 'fresh' or 'resume'.

    An unfinished run (killed, interrupted, or stopped by a guard) is resumed automatically; a finished one is
    replaced only with --overwrite; a folder that is not a weitiao run is never touched.
    """
    state = run_state(out_dir)
    if state == "foreign":
        raise WeitiaoError(f"output.dir: {out_dir} exists and is not a weitiao run folder; "
                           "choose another output.dir (weitiao will not delete it)")
    if overwrite:
        return "fresh"
    if state == "finished":
        what = "--resume: nothing to resume, " if resume else ""
        raise WeitiaoError(f"output.dir: {what}{out_dir} already holds a finished run; pass --overwrite to replace "
                           "it or choose another output.dir")
    if state == "unfinished":
        return "resume"
    if resume:
        raise WeitiaoError(f"--resume: {out_dir} holds no run to resume")
    return "fresh"


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """One JSON object per line, UTF-8 (predictions.jsonl and the like)."""
    Path(path).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (temp file + rename), so a crash never leaves a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_predictions(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def plot_losses(log_history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    val = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss", color="tab:blue")
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss", color="tab:orange")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("weitiao training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def check_same_config(cfg: Config, out_dir: Path) -> None:
    """A resumed run must use the config it started with (where its folder lives aside)."""
    import yaml

    saved_file = out_dir / "config.yaml"
    if not saved_file.is_file():
        return
    saved = yaml.safe_load(saved_file.read_text(encoding="utf-8")) or {}
    now = yaml.safe_load(dump_config(resolved(cfg)))

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    a, b = dict(flat(saved)), dict(flat(now))
    # a key the saved config lacks was added to weitiao after the run started: its default is what the run used
    defaults = dict(flat(yaml.safe_load(dump_config(Config()))))
    where = {"output.overwrite", "output.dir"}  # a run folder may be moved, e.g. to a bigger disk
    changed = sorted(k for k in a.keys() | b.keys()
                     if a.get(k, defaults.get(k)) != b.get(k, defaults.get(k)) and k not in where)
    if changed:
        raise WeitiaoError(f"output.dir: {out_dir} holds an unfinished run with a different config "
                           f"({', '.join(changed)}); use the same config to resume, or --overwrite to start over")


def load_run(run_dir: Path):
    """(config path, adapter folder or None, model folder or None) of a finished run."""
    status = json.loads((run_dir / "run.json").read_text()).get("status")
    if status != "finished":
        raise WeitiaoError(f"{run_dir}: the run has not finished; nothing to evaluate yet")
    adapter = run_dir / "adapter"
    model = run_dir / "model"
    return (run_dir / "config.yaml", str(adapter) if adapter.is_dir() else None,
            str(model) if model.is_dir() else None)


def run_template(run_dir: Path, tokenizer) -> ChatTemplate:
    """The template a run was trained with, exactly (installed on `tokenizer` as its chat_template)."""
    described = json.loads((run_dir / "template.json").read_text(encoding="utf-8"))
    jinja = (run_dir / "chat_template.jinja").read_text(encoding="utf-8")
    tokenizer.chat_template = jinja
    return ChatTemplate(described["name"], jinja, described["eot"], described["eot_id"],
                        tuple(described["stop_ids"]))


@dataclass
class TrainResult:
    metrics: dict  # what metrics.json holds
    model: object  # the trained model (a PeftModel for adapter methods)
    tokenizer: object
    out_dir: Path


# ---------------------------------------------------------------- a training run's folder, from start to finish


def decide_mode(cfg: Config, overwrite: bool, resume: bool) -> str:
    """'fresh' or 'resume' for `output.dir`, decided before any input is read (`check_output_dir`); a resumed run
    must have the config it started with. In a multi-process run rank 0 decides and every rank gets its answer."""
    from weitiao.training import distributed

    out_dir = Path(cfg.output.dir)

    def decide() -> str:
        mode = check_output_dir(out_dir, overwrite or cfg.output.overwrite, resume)
        if mode == "resume":
            check_same_config(cfg, out_dir)
        return mode

    mode = distributed.on_main(decide)
    if mode == "resume":
        log(f"resuming the unfinished run in {out_dir} (--overwrite starts over)")
    return mode


@contextmanager
def run_folder(cfg: Config, mode: str, template, report: dict, skipped: list | None):
    """The output folder, created only now that every input has been checked, with the files that describe the
    run (`write_run_files`). What runs inside (the base model's scores) may still find a bad input: a
    WeitiaoError there removes a fresh folder, so a bad input leaves nothing behind. Rank 0 alone writes."""
    from weitiao.training import distributed

    out_dir, fresh, main = Path(cfg.output.dir), mode == "fresh", distributed.world().main
    if fresh and main:
        remove_dir(out_dir)  # reached only for an empty folder or with --overwrite on a weitiao run
        out_dir.mkdir(parents=True)
    try:
        if main:
            write_run_files(out_dir, cfg, template, report, skipped)
        distributed.barrier()
        yield out_dir
    except WeitiaoError:
        if fresh and main:
            remove_dir(out_dir)
        raise


def finish(out_dir: Path, trainer, metrics: dict, saved: str) -> None:
    """The end of a run: the trainer's state and loss curve, metrics.json, and run.json marked finished (last, so
    a folder that says finished holds everything); then the results go to the run's experiment trackers."""
    history = trainer.state.log_history
    (out_dir / "trainer_state.json").write_text(
        (Path(trainer.args.output_dir) / "trainer_state.json").read_text(encoding="utf-8"), encoding="utf-8")
    plot_losses(history, out_dir / "loss_curve.png")
    write_json(out_dir / "metrics.json", metrics)
    write_json(out_dir / RUN_FILE, {"status": "finished", "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                    "saved": Path(saved).name})
    log_results(trainer, metrics)  # to the run's experiment trackers (train.report_to), once the run is whole
