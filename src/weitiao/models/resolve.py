"""Which weights a config means: the model's local folder, tokenizer and chat template (no weights loaded), a
finished run used as a starting point, and a peft adapter put on top of a loaded model."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from weitiao.config import POLICY_TASKS, POLICY_OPTIMISATION_TASKS, Config
from weitiao.console import log
from weitiao.errors import WeitiaoError
from weitiao.runs import RUN_FILE, load_run, run_template


def find_model(cfg: Config, name_or_path: str | None = None):
    """(source, local folder, tokenizer, chat template) of the configured model; no weights are loaded.

    Checks everything that can fail on the user's side (missing path, pickle weights, unusable template) first.
    """
    from weitiao.data.templates import resolve_template

    m = cfg.model
    start = Path(m.name_or_path).expanduser()
    if name_or_path is None and cfg.task in POLICY_OPTIMISATION_TASKS and (start / RUN_FILE).is_file():
        return run_base(start)  # preference optimisation and GRPO continue a finished run
    source, folder, tokenizer = find_tokenizer(cfg, name_or_path)
    return source, folder, tokenizer, resolve_template(tokenizer, m.chat_template)


def find_tokenizer(cfg: Config, name_or_path: str | None = None):
    """(source, local folder, tokenizer) of the configured model (or `name_or_path`): what a classifier needs,
    which has no chat template; no weights are loaded."""
    from weitiao.models.loading import load_tokenizer, local_folder, resolve_source

    m = cfg.model
    revision = m.revision if name_or_path is None else None  # the revision belongs to model.name_or_path
    source = resolve_source(name_or_path or m.name_or_path, m.convert_pickle, revision)
    if m.trust_remote_code:
        log(f"warning: model.trust_remote_code is on: code shipped with {source.label} will run")
    folder = local_folder(source, log, m.trust_remote_code)
    return source, folder, load_tokenizer(folder, m.trust_remote_code)


@dataclass
class Start:
    """Where a preference run starts: a model, or a finished run's model or LoRA adapter with its template."""

    source: object  # models.loading.ModelSource of the weights loaded
    folder: str  # local model folder (the base, when `adapter` is set)
    tokenizer: object
    template: object
    adapter: str | None = None  # the run's LoRA adapter folder, trained further
    run_dir: Path | None = None


def find_start(cfg: Config) -> Start:
    """The model a `task: dpo`/`kto`/`orpo`/`simpo`/`grpo` run starts from; `model.name_or_path` may be a finished
    SFT (or DPO/KTO/ORPO/SimPO/GRPO) run folder."""
    from weitiao.methods import method_of

    source, folder, tokenizer, template = find_model(cfg)
    run_dir = Path(cfg.model.name_or_path).expanduser()
    if not (run_dir / RUN_FILE).is_file():
        return Start(source, folder, tokenizer, template)
    _, adapter, _ = load_run(run_dir)
    if adapter and not method_of(cfg.method).continues_lora:
        raise WeitiaoError(f"model.name_or_path: {run_dir} holds a LoRA adapter: continue it with method lora or "
                           f"qlora, or make a full model folder with `weitiao export {run_dir} --out DIR` and start "
                           "from that")
    if cfg.model.chat_template != "auto":
        log(f"note: model.chat_template is ignored: the run {run_dir} brings its own template ({template.name})")
    return Start(source, folder, tokenizer, template, adapter, run_dir)


def run_base(run_dir: Path):
    """find_model's answer for a finished run used as a starting point: its full model folder or its base model
    (followed through a chain of DPO runs), and the run's own chat template."""
    from weitiao.config import load_config
    from weitiao.methods import method_of

    config_path, _, model_dir = load_run(run_dir)
    run_cfg = load_config(config_path)
    where = f"model.name_or_path: {run_dir}"
    if run_cfg.task not in POLICY_TASKS:
        raise WeitiaoError(f"{where} is a task {run_cfg.task} run; a policy is trained further from a language "
                           "model (an sft, dpo, kto, orpo, simpo or grpo run)")
    if method_of(run_cfg.method).virtual_tokens:
        raise WeitiaoError(f"{where} trained a {run_cfg.method.name} adapter, which DPO, KTO and GRPO cannot train "
                           "further; start from its base model, or from a lora/full run")
    source, folder, tokenizer, _ = find_model(run_cfg, model_dir)
    return source, folder, tokenizer, run_template(run_dir, tokenizer)


def attach_adapter(model, adapter: str | None):
    """(model, label): the model with the peft adapter folder `adapter` on top, or unchanged when there is none."""
    if not adapter:
        return model, "model"
    from peft import PeftModel

    if not (Path(adapter) / "adapter_config.json").is_file():
        raise WeitiaoError(f"--adapter: {adapter} has no adapter_config.json (not a peft adapter folder)")
    return PeftModel.from_pretrained(model, adapter), "adapter"
