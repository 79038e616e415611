"""The New run form, as the config the CLI would read.

The form's fields become a config dict, and that dict goes through `config_from_dict`, the CLI's own validation:
every problem is reported together, in the CLI's words. The YAML the UI writes and runs (`ROOT/configs/NAME.yaml`)
is this dict, so `weitiao train ROOT/configs/NAME.yaml` runs the same run from the command line.
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from weitiao.config import Config, config_from_dict
from weitiao.errors import ConfigError
from weitiao.methods import METHODS, method_of

NAME = re.compile(r"^[A-Za-z0-9][\w.-]{0,63}$")  # a run's folder name under the UI's root
NUMBERS = {"max_steps": int, "epochs": float, "batch_size": int, "learning_rate": float, "eval_steps": int}


def entries(text) -> list[str]:
    """A data field: one path (or hub dataset) per line or comma; empty for none."""
    if isinstance(text, list):
        return [str(t).strip() for t in text if str(t).strip()]
    return [part.strip() for part in re.split(r"[\n,]", str(text or "")) if part.strip()]


def numbers(form: dict, problems: list[str]) -> dict:
    """The training numbers the form sets; a field that is not a number is a problem naming it."""
    out = {}
    for key, kind in NUMBERS.items():
        value = str(form.get(key, "")).strip()
        if not value:
            continue
        try:
            out[key] = kind(value)
        except ValueError:
            problems.append(f"train.{key}: {value!r} is not a number")
    return out


def config_dict(form: dict, root: Path) -> tuple[dict, list[str]]:
    """(config dict, problems the dict itself cannot show): the run name and the numbers."""
    problems: list[str] = []
    name = str(form.get("name", "")).strip()
    if not NAME.match(name):
        problems.append(f"run name: {name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter "
                        "or digit (it names the run's folder)")
    method = str(form.get("method", "lora"))
    section: dict = {"name": method}
    # the methods that train LoRA adapters take the form's rank (method.lora.r, alpha 2r)
    if method in METHODS and method_of(method).continues_lora and str(form.get("lora_r", "")).strip():
        try:
            rank = int(form["lora_r"])
            section["lora"] = {"r": rank, "alpha": 2 * rank}
        except ValueError:
            problems.append(f"method.lora.r: {form['lora_r']!r} is not a number")
    data = {"format": form.get("format", "messages"), "train": entries(form.get("train")),
            "val": entries(form.get("val")), "test": entries(form.get("test"))}
    if str(form.get("max_length", "")).strip():
        data["max_length"] = int(form["max_length"]) if str(form["max_length"]).isdigit() else form["max_length"]
    cfg = {"task": form.get("task", "sft"),
           "model": {"name_or_path": str(form.get("model", "")).strip()},
           "data": data,
           "method": section,
           "train": numbers(form, problems),
           "output": {"dir": str(root / name)}}
    metrics = entries(form.get("metrics"))
    if metrics:
        cfg["eval"] = {"metrics": metrics}
    rewards = entries(form.get("rewards"))
    if rewards:  # task grpo: metric names, module:function or reward-run folders, summed with weight 1 each
        cfg["grpo"] = {"rewards": rewards}
    return cfg, problems


def validated(form: dict, root: Path) -> tuple[dict, Config]:
    """The form's config dict and the typed config, or one ConfigError listing every problem."""
    data, problems = config_dict(form, root)
    try:
        cfg = config_from_dict(data, "the New run form", base_dir=str(root))
    except ConfigError as err:
        raise ConfigError("the New run form", problems + err.problems) from None
    if problems:
        raise ConfigError("the New run form", problems)
    return data, cfg


def as_yaml(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
