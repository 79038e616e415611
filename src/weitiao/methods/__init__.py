"""Fine-tuning methods: each module turns its config section into a change of the model, and exports one
`Method` (methods.protocol) that says what the rest of weitiao needs to know about it.

`apply_method` returns the model to train; `save_trained` writes what a user loads back: a peft adapter folder for
adapter methods, a complete Hugging Face model folder for the others. A new method is a module with a `METHOD`
(its settings dataclass, if it has any, beside it), and one `register` line below: the config's `method` section
(`method_config_type`) is built from what is registered, so config.py names no method.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from weitiao.methods import freeze, full, lora, prefix, prompt, ptuning, qlora
from weitiao.methods.protocol import Method
from weitiao.methods.protocol import MethodConfig as MethodSection  # `MethodConfig` is the built class below
from weitiao.settings import doc

METHODS: dict[str, Method] = {}
_SECTION_TYPE: dict[str, type] = {}  # the `method` section's dataclass, built once per registry state


def register(method: Method) -> None:
    """Make `method.name: NAME` valid, and its settings a section of `method` (`method.<section>`)."""
    METHODS[method.name] = method
    _SECTION_TYPE.clear()


def unregister(name: str) -> None:
    """Take a method out again (a test's, or a plug-in's that is unloaded)."""
    del METHODS[name]
    _SECTION_TYPE.clear()


register(full.METHOD)
register(freeze.METHOD)
register(lora.METHOD)
register(qlora.METHOD)
register(prefix.METHOD)
register(prompt.METHOD)
register(ptuning.METHOD)


def method_config_type() -> type:
    """The dataclass of the config's `method` section: `name`, one of the registered methods (its help lists what
    each trains), then each method's own settings section, with the help its module gives it."""
    if "method" not in _SECTION_TYPE:
        names = tuple(METHODS)
        name_help = "Fine-tuning method. " + "; ".join(f"`{m.name}` {m.help}" for m in METHODS.values() if m.help)
        fields = [("name", Literal[names], doc(name_help + ".", "lora"))]
        fields += [(m.section, m.settings_type, doc(m.section_help or f"Settings of `{m.name}`.",
                                                    default_factory=m.settings_type))
                   for m in METHODS.values() if m.section]
        section = dataclasses.make_dataclass("MethodConfig", fields, namespace={"problems": _section_problems})
        section.__module__ = __name__
        _SECTION_TYPE["method"] = section
    return _SECTION_TYPE["method"]


def _section_problems(self) -> list[str]:
    """Each method's settings check themselves; a method's whose defaults are not a valid setting (`freeze`'s
    train nothing) only when it is the method."""
    return [problem for method in METHODS.values() if method.section
            and (method.name == self.name or method.checked_unless_chosen)
            for problem in method.settings(self).problems()]


def __getattr__(name: str):
    if name == "MethodConfig":  # `methods.MethodConfig`, as it is now (pickle finds the class by this name)
        return method_config_type()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def method_of(cfg: MethodSection | str) -> Method:
    """The registered method a config's `method` section (or a run's recorded method name) names."""
    return METHODS[cfg if isinstance(cfg, str) else cfg.name]


def load_kwargs(cfg: MethodSection, device: str) -> dict:
    """Extra `from_pretrained` arguments a method needs at load time (quantization for qlora)."""
    return method_of(cfg).load_kwargs(cfg, device)


def apply_method(model, cfg: MethodSection, gradient_checkpointing: bool = False):
    return method_of(cfg).apply(model, cfg, gradient_checkpointing)


def continue_adapter(model, adapter_dir: str, cfg: MethodSection, gradient_checkpointing: bool = False):
    """A trained LoRA adapter loaded trainable, to train further (`lora`, or `qlora` on a quantized base). Its own
    adapter_config (rank, targets) applies; `method.lora` does not."""
    from peft import PeftModel

    if method_of(cfg).quantized_base:
        model = qlora.prepare(model, cfg, gradient_checkpointing)
    return PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)


def unwrapped(model):
    """The transformers model under peft and distributed (DDP / accelerate) wrappers, or the model itself."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def weights_footprint(model) -> dict:
    """Bytes of the model's weights as stored (quantized weights packed), and what they would take in fp32."""
    logical = sum(logical_numel(p) for p in model.parameters())
    return {"stored_bytes": int(model.get_memory_footprint()), "fp32_bytes": 4 * logical}


def logical_numel(p) -> int:
    """Number of weights a parameter stands for. bitsandbytes packs two 4-bit weights per byte, so a 4-bit
    parameter's `numel()` is half its logical size; its `quant_state.shape` holds the real one."""
    import torch

    state = getattr(p, "quant_state", None)
    return int(torch.Size(state.shape).numel()) if state is not None else p.numel()


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts, quantized weights counted at their logical size."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(logical_numel(p) for p in model.parameters())
    return trainable, total


def save_trained(model, tokenizer, out_dir: str, cfg: MethodSection, main: bool = True) -> str:
    """Save the trained weights; returns the folder written ("adapter" or "model" inside out_dir).

    In a multi-process run every process calls this (an FSDP-sharded model is gathered by all of them) and
    `main` is true on rank 0 alone, which writes. The folder is the same as a single-device run's."""
    import json
    import os

    import torch

    if method_of(cfg).adapter:
        folder = os.path.join(out_dir, "adapter")
        model.save_pretrained(folder, is_main_process=main)
        config_file = os.path.join(folder, "adapter_config.json")
        if main and os.path.isfile(config_file):
            config = json.loads(open(config_file, encoding="utf-8").read())
            # peft records the class of a sharded base (FSDPLlamaForCausalLM, made by FSDP2) for AutoPeftModel;
            # it names no class a user can load, so the record is dropped, as for a single-device run
            if str((config.get("auto_mapping") or {}).get("base_model_class", "")).startswith("FSDP"):
                config["auto_mapping"] = None
                with open(config_file, "w", encoding="utf-8") as f:
                    json.dump(config, f, indent=2, sort_keys=True)
    else:
        folder = os.path.join(out_dir, "model")
        model.save_pretrained(folder, is_main_process=main)
        if main:
            tokenizer.save_pretrained(folder)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                drop_gathered_ties(model, folder)  # only a multi-process save writes tied copies twice
    return folder


def drop_gathered_ties(model, folder: str) -> None:
    """Remove tied copies (the LM head of a model whose head is its embedding matrix) from a saved model folder.

    transformers drops them by noticing two names share one storage; in a multi-process run the tensors it saves are
    gathered copies, so both names were written. The folder must be the one a single-device run writes."""
    import os

    import torch
    from safetensors.torch import load_file, save_file

    path = os.path.join(folder, "model.safetensors")
    ties = getattr(model, "all_tied_weights_keys", None) or {}
    if not ties or not os.path.isfile(path):
        return  # no ties, or a sharded save (model.safetensors.index.json): left as transformers wrote it
    state = load_file(path)
    tied = [copy for copy, source in ties.items()
            if copy in state and source in state and torch.equal(state[copy], state[source])]
    if tied:
        for name in tied:
            del state[name]
        save_file(state, path, metadata={"format": "pt"})
