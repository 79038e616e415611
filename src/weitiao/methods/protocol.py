"""What every fine-tuning method module exports: one `Method`, registered in one line in `methods/__init__.py`
(as peft registers its tuners). Code outside `methods/` asks the method (`method_of(cfg.method).virtual_tokens`)
and never compares its name."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable

# The config's `method` section (methods.method_config_type(): `name` and each registered method's own settings
# section). An alias for annotations, so that a method module imports neither the registry nor the config.
MethodConfig = Any


def no_load_kwargs(cfg, device: str) -> dict:
    return {}


def no_training_context(model, cfg, amp, strategy: str):
    return contextlib.nullcontext()


@dataclass(frozen=True)
class Method:
    name: str  # the value of `method.name`
    # (model, MethodConfig, gradient_checkpointing) -> the model to train
    apply: Callable
    # what it trains, after its name, in the help of `method.name` ("trains every weight")
    help: str = ""
    # what `save_trained` writes: a peft adapter folder (`adapter`) or a complete model folder (`model`)
    saves: str = "model"
    # the config section holding its settings (`method.lora`, ...), None when it has none
    section: str | None = None
    # the dataclass of that section, defined in the method's module (methods.method_config_type composes them)
    settings_type: type | None = None
    # the section's help text
    section_help: str = ""
    # its section is checked even when another method is chosen (False: its defaults are not a valid setting)
    checked_unless_chosen: bool = True
    # learned virtual tokens in front of every input (prompt learning): nothing to merge into the weights; trained
    # on padded batches with logits everywhere, decoded by weitiao's own cached loop (evaluation.virtual_tokens)
    virtual_tokens: bool = False
    # a finished run's LoRA adapter can be trained further with this method (DPO/KTO from an SFT run)
    continues_lora: bool = False
    # the base is quantized while it loads: an export de-quantizes it before merging
    quantized_base: bool = False
    # only new small matrices train on a frozen, unquantized base: on a CPU under bf16 autocast that base is
    # stored in bf16 (models.precision.weights_dtype)
    frozen_dense_base: bool = False
    # (MethodConfig, device) -> extra `from_pretrained` arguments (quantization for qlora)
    load_kwargs: Callable = no_load_kwargs
    # (model, MethodConfig, autocast dtype, distributed strategy) -> a context the training steps run in
    training_context: Callable = no_training_context

    @property
    def adapter(self) -> bool:
        """Whether a run saves a peft adapter (over a base model the run folder names) rather than a model."""
        return self.saves == "adapter"

    def settings(self, cfg):
        """The method's own config section (`cfg.method.<section>`), or None."""
        return getattr(cfg, self.section) if self.section else None
