"""weitiao from Python: the pipeline `weitiao train`, `eval`, `chat` and `export` run, as functions.

    import weitiao

    run = weitiao.train("examples/quickstart.yaml", train={"max_steps": 20}, output={"dir": "runs/short"})
    run.metrics["test"]["tuned"]["count_list"]
    run.chat("Name 3 fruits, please.")
    run.export("merged/")
    weitiao.evaluate(run.path, split="test")

The same config validation as the CLI, every problem reported together, but as exceptions (`ConfigError`,
`DataError`, `WeitiaoError`) instead of an exit status. The CLI is a thin layer over these functions.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from weitiao.config import Config, load_config
from weitiao.errors import WeitiaoError

# task -> workflows module; dpo.py runs every trainer that optimises a policy on pairs (DPO, KTO, ORPO, SimPO)
WORKFLOWS = {"sft": "sft", "pretrain": "sft", "classify": "classify", "regress": "regress", "dpo": "dpo", "kto": "dpo",
             "orpo": "dpo", "simpo": "dpo", "grpo": "grpo", "reward": "reward"}


def environment(offline: bool = False) -> None:
    """What every entry point sets before anything loads: offline mode when asked (`--offline`; HF_HUB_OFFLINE=1
    from the environment works too: hub ids are then read from the local cache only, models/hub.py), no telemetry,
    and no library noise before weitiao's own one-line errors."""
    import logging
    import warnings

    if offline:
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
            os.environ[name] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # bitsandbytes looks for an optional kernel package on import and logs when it is absent; it then uses its
    # own CPU kernels, so there is nothing for a user to do (and a config error should print one line only)
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    # bitsandbytes asks the `kernels` package (a transformers dependency since 5.25) for a hub kernel on import;
    # offline, `kernels` warns that it skips the publisher check: nothing for a user to do
    logging.getLogger("kernels").setLevel(logging.ERROR)
    # transformers 5 renames (gradient -> activation checkpointing) that peft still reads; nothing for a user to do
    warnings.filterwarnings("ignore", message=r".*is deprecated and will be removed in v6.*", category=FutureWarning)
    # peft's prefix-tuning forward still passes the KV cache as `past_key_values` (renamed `cache`); weitiao's own
    # decoding uses the new name
    warnings.filterwarnings("ignore", message=r"`past_key_values` is deprecated.*", category=FutureWarning)


def as_overrides(sections: dict, prefix: str = "") -> list[str]:
    """`{"train": {"max_steps": 20}}` -> `["train.max_steps=20"]`, the CLI's override syntax (values as YAML)."""
    import yaml

    out = []
    for key, value in sections.items():
        if isinstance(value, dict):
            out += as_overrides(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}=" + yaml.safe_dump(value, default_flow_style=True).strip().removesuffix(
                "\n...").strip())
    return out


def config(config_or_path: str | Path | Config, overrides: list[str] = (), **sections) -> Config:
    """A validated config: a YAML path with overrides (`section.key=value` strings, or sections as keyword
    arguments: `train={"max_steps": 20}`), or a `Config` already built."""
    environment()
    if isinstance(config_or_path, Config):
        if overrides or sections:
            raise WeitiaoError("overrides apply to a config file; change the Config object's fields instead")
        return config_or_path
    return load_config(config_or_path, list(overrides) + as_overrides(sections))


@dataclass
class Run:
    """A finished run folder: its config, its metrics, and what can be done with its model."""

    path: Path
    config: Config
    metrics: dict = field(default_factory=dict)

    def chat(self, message: str | list[dict], max_tokens: int = 256, temperature: float = 0.0,
             system: str | None = None) -> str:
        """One answer from the tuned model, with the run's own chat template and stop tokens (greedy unless
        `temperature` > 0). `message`: the user's text, or a whole conversation of {role, content} turns."""
        from weitiao.serving.engine import Engine, Sampling
        from weitiao.serving.loaded import load

        if not hasattr(self, "_engine"):
            self._engine = Engine(load(str(self.path), log=lambda _: None))
        turns = [{"role": "user", "content": message}] if isinstance(message, str) else list(message)
        if system:
            turns = [{"role": "system", "content": system}] + turns
        ids = self._engine.encode(self._engine.render(turns))
        return self._engine.complete(ids, Sampling(max_new_tokens=max_tokens, temperature=temperature)).text

    def export(self, out: str | Path, dtype: str | None = None, overwrite: bool = False, format: str = "hf",
               quant: str | None = None) -> Path:
        """The run as a plain Hugging Face model folder (`format="hf"`, in `dtype`, default fp32), or as a GGUF
        file with an Ollama Modelfile (`format="gguf"`, in `quant`, default q8_0); adapter merged and the result
        checked (see `weitiao export`)."""
        from weitiao.serving import export

        export.run(str(self.path), str(out), dtype=dtype, overwrite=overwrite, format=format, quant=quant)
        return Path(out)

    def evaluate(self, split: str = "test", rephrase: bool = False, **sections) -> dict:
        return evaluate(self.path, split=split, rephrase=rephrase, **sections)


def train(config_or_path: str | Path | Config, overrides: list[str] = (), overwrite: bool = False,
          resume: bool = False, **sections) -> Run:
    """Fine-tune as the config says (any task), score base and tuned on the test split, save: `weitiao train`
    on one process. Returns the finished run."""
    cfg = config(config_or_path, overrides, **sections)
    workflow = importlib.import_module(f"weitiao.workflows.{WORKFLOWS[cfg.task]}")
    result = workflow.run(cfg, overwrite=overwrite, resume=resume)
    return Run(Path(result.out_dir), cfg, result.metrics)


def load_run(path: str | Path) -> Run:
    """A finished run folder, as `train` returns it."""
    import json

    from weitiao.runs import load_run as run_files

    environment()
    path = Path(path)
    if not (path / "run.json").is_file():
        raise WeitiaoError(f"{path}: not a weitiao run folder (no run.json)")
    config_path, _, _ = run_files(path)
    metrics_file = path / "metrics.json"
    return Run(path, load_config(config_path), json.loads(metrics_file.read_text()) if metrics_file.is_file() else {})


def evaluate(target: str | Path, split: str = "test", rephrase: bool = False, adapter: str | None = None,
             model_dir: str | None = None, out: str | None = None, overrides: list[str] = (), **sections) -> dict:
    """Loss, perplexity and the configured metrics of a finished run, or of a config's model (with an adapter or
    another model folder on top): `weitiao eval`."""
    from weitiao.runs import load_run as run_files
    from weitiao.workflows import evaluate as evaluation

    environment()
    target = Path(target)
    if target.is_dir():
        if not (target / "run.json").is_file():
            raise WeitiaoError(f"{target} is a folder but not a weitiao run folder (no run.json)")
        config_path, run_adapter, run_model = run_files(target)
        adapter, model_dir = adapter or run_adapter, model_dir or run_model
    else:
        config_path = target
    cfg = load_config(config_path, list(overrides) + as_overrides(sections))
    return evaluation.run(cfg, adapter=adapter, model_dir=model_dir, split=split, out=out, rephrase=rephrase)
