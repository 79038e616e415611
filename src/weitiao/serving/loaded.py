"""Load what a user wants to talk to: a finished run (base + its adapter, or its full model) or a plain model.

`chat`, `generate`, `serve` and `export` all start here, so they answer with the run's own chat template and stop
tokens, the ones training used (`template.json` + `chat_template.jinja` in the run folder). A plain model uses its
tokenizer's template, like `weitiao train` would.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from weitiao.data.templates import ChatTemplate
from weitiao.errors import WeitiaoError


@dataclass
class Loaded:
    model: object  # a PreTrainedModel, or a PeftModel holding one or more adapters
    tokenizer: object
    template: ChatTemplate
    name: str  # what `/v1/models` lists and `--model` selects: the run folder's name, or the model's label
    device: str
    amp_dtype: object  # autocast dtype (None: no autocast)
    method: str | None = None  # the run's method (lora, qlora, prefix, full, ...); None for a plain model
    run_dir: Path | None = None
    config: object = None  # the run's Config, when loaded from a run
    adapters: dict = field(default_factory=dict)  # served name -> peft adapter name inside `model`
    source: object = None  # models.loading.ModelSource of the base weights (a GGUF file, a folder, a hub id)


def is_run(path: str | Path) -> bool:
    return (Path(path) / "run.json").is_file()


def load(target: str, device: str = "auto", precision: str | None = None, overrides: list[str] = (),
         quantized_base: bool = True, log=print) -> Loaded:
    """Load a run folder (finished) or a model (anything `model.name_or_path` accepts) for generation.

    `quantized_base`: a QLoRA run's base is re-quantized as in training (False loads it in full precision).
    """
    from weitiao.config import POLICY_TASKS, Config, load_config
    from weitiao.methods import load_kwargs
    from weitiao.models.loading import load_model, pick_device, pick_dtype
    from weitiao.models.precision import autocast_dtype
    from weitiao.models.resolve import attach_adapter, find_model
    from weitiao.runs import load_run, run_template

    if is_run(target):
        run_dir = Path(target)
        config_path, adapter, model_dir = load_run(run_dir)
        cfg = load_config(config_path, list(overrides) + ([f"model.device={device}"] if device != "auto" else []))
        if cfg.task not in POLICY_TASKS:
            raise WeitiaoError(f"{run_dir}: a `task: {cfg.task}` run has no text to generate; use `weitiao eval`")
        source, folder, tokenizer, _ = find_model(cfg, model_dir)
        template = run_template(run_dir, tokenizer)  # exactly what training used, not what the tokenizer says now
        dev = pick_device(cfg.model.device)
        extra = load_kwargs(cfg.method, dev) if (adapter and quantized_base) else {}
        model = load_model(folder, pick_dtype(cfg.model.dtype, dev), dev, cfg.model.trust_remote_code,
                           cfg.model.attn_implementation, extra)
        model, _ = attach_adapter(model, adapter)
        amp = autocast_dtype(precision or cfg.train.precision, dev)
        name = run_dir.resolve().name
        adapters = {name: "default"} if adapter else {}
        return Loaded(model, tokenizer, template, name, dev, amp, cfg.method.name, run_dir, cfg, adapters, source)

    source, folder, tokenizer, template = find_model(Config(), target)
    dev = pick_device(device)
    model = load_model(folder, pick_dtype("auto", dev), dev)
    return Loaded(model, tokenizer, template, source.label, dev, autocast_dtype(precision or "auto", dev),
                  source=source)


def add_adapter(loaded: Loaded, name: str, path: str, log=print) -> None:
    """Serve another LoRA adapter (a run folder or an adapter folder) of the same base model under `name`."""
    from peft import PeftModel

    from weitiao.methods import method_of

    folder = Path(path)
    if is_run(folder):
        folder = folder / "adapter"
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        raise WeitiaoError(f"--adapter {name}={path}: no peft adapter there (no adapter_config.json)")
    if name in loaded.adapters or name == loaded.name:
        raise WeitiaoError(f"--adapter {name}={path}: the name {name!r} is already served")
    if not isinstance(loaded.model, PeftModel):
        raise WeitiaoError("--adapter: the main model has no adapter; serve a LoRA run first, then add adapters "
                           "of the same base model")
    peft_type = json.loads(config_file.read_text()).get("peft_type", "")
    if method_of(loaded.method).virtual_tokens or peft_type != "LORA":
        raise WeitiaoError(f"--adapter {name}={path}: only LoRA adapters can share one base model "
                           f"(got {peft_type or 'unknown'} with a {loaded.method} run)")
    loaded.model.load_adapter(str(folder), adapter_name=name)
    loaded.adapters[name] = name
    log(f"adapter {name!r} loaded from {folder}")
