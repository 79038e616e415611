"""Fine-tuning methods: each module turns its config section into a change of the model, and exports one
`Method` (methods.protocol) that says what the rest of weitiao needs to know about it.

`apply_method` returns the model to train; `save_trained` writes what a user loads back: a peft adapter folder for
adapter methods, a complete Hugging Face model folder for the others. A new method is a module with a `METHOD`,
and one `register` line below.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from weitiao.methods import freeze, full, lora, prefix, prompt, ptuning, qlora
from weitiao.methods.protocol import Method

if TYPE_CHECKING:  # annotations only: config imports this package for the methods' settings
    from weitiao.config import MethodConfig

METHODS: dict[str, Method] = {}


def register(method: Method) -> None:
    METHODS[method.name] = method


register(full.METHOD)
register(freeze.METHOD)
register(lora.METHOD)
register(qlora.METHOD)
register(prefix.METHOD)
register(prompt.METHOD)
register(ptuning.METHOD)


def method_of(cfg: MethodConfig | str) -> Method:
    """The registered method a config's `method` section (or a run's recorded method name) names."""
    return METHODS[cfg if isinstance(cfg, str) else cfg.name]


def load_kwargs(cfg: MethodConfig, device: str) -> dict:
    """Extra `from_pretrained` arguments a method needs at load time (quantization for qlora)."""
    return method_of(cfg).load_kwargs(cfg, device)


def apply_method(model, cfg: MethodConfig, gradient_checkpointing: bool = False):
    return method_of(cfg).apply(model, cfg, gradient_checkpointing)


def continue_adapter(model, adapter_dir: str, cfg: MethodConfig, gradient_checkpointing: bool = False):
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


def save_trained(model, tokenizer, out_dir: str, cfg: MethodConfig, main: bool = True) -> str:
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
