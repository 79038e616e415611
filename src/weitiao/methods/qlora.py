"""QLoRA (Dettmers et al. 2023, arXiv:2305.14314): LoRA on a frozen base quantized by bitsandbytes.

The base's linear weights are stored in 4-bit NormalFloat (NF4, optionally with the quantization constants
themselves quantized: "double quantization") or in 8-bit (LLM.int8(), arXiv:2208.07339); they are dequantized
block by block in the forward pass, in `compute_dtype`. Only the LoRA matrices (the `method.lora` settings) are
trained and saved; loading the adapter again quantizes the base the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from weitiao.errors import WeitiaoError
from weitiao.methods import lora
from weitiao.methods.protocol import Method, MethodConfig
from weitiao.settings import doc



@dataclass
class QLoraSettings:
    bits: Literal[4, 8] = doc("Bits per weight of the frozen base: 4 (NF4/FP4) or 8 (LLM.int8).", 4)
    quant_type: Literal["nf4", "fp4"] = doc("4-bit data type: `nf4` (NormalFloat, the QLoRA paper's) or `fp4`.",
                                            "nf4")
    double_quant: bool = doc("Quantize the quantization constants too (saves about 0.4 bit per weight).", True)
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = doc(
        "dtype of the dequantized matmuls. `auto`: bfloat16 (or float16) on CUDA, float32 on CPU.", "auto"
    )
    upcast_fp32: bool = doc(
                "Cast the base's weights that stay unquantized (embeddings, norms, LM head) to fp32, as peft's "
        "prepare_model_for_kbit_training does. Off, they stay in the load dtype (bf16 on CUDA, fp32 on CPU), as "
        "LLaMA-Factory, unsloth and torchtune keep them; with fp16 compute they are upcast either way (fp16's "
        "range is what the upcast guards against).", False)

    def problems(self, where: str = "method.qlora") -> list[str]:
        return []  # every field is a choice among named values, which the type check covers


def compute_dtype(cfg: MethodConfig, device: str):
    import torch

    if cfg.qlora.compute_dtype != "auto":
        return getattr(torch, cfg.qlora.compute_dtype)
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32  # CPU kernels: fp32 is exact and, on this CPU, as fast as bf16


def load_kwargs(cfg: MethodConfig, device: str) -> dict:
    """from_pretrained arguments that quantize the base while it loads."""
    import importlib.util

    from transformers import BitsAndBytesConfig

    if importlib.util.find_spec("bitsandbytes") is None:
        raise WeitiaoError("method.name: qlora needs bitsandbytes (pip install bitsandbytes); or use method lora")

    q = cfg.qlora
    if q.bits == 4:
        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=q.quant_type,
                                 bnb_4bit_use_double_quant=q.double_quant,
                                 bnb_4bit_compute_dtype=compute_dtype(cfg, device))
    else:
        import logging

        # bitsandbytes logs "inputs will be cast ... to float16" on every 8-bit matmul; it is expected, not news
        logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
        bnb = BitsAndBytesConfig(load_in_8bit=True)
    return {"quantization_config": bnb, "device_map": {"": device}}


def prepare(model, cfg: MethodConfig, gradient_checkpointing: bool = False):
    """Freeze the quantized base for adapter training. peft's prepare_model_for_kbit_training also casts every
    unquantized bf16/fp16 weight to fp32, worth it with fp16 compute only (method.qlora.upcast_fp32)."""
    import torch

    if cfg.qlora.upcast_fp32 or cfg.qlora.compute_dtype == "float16" or any(
            p.dtype == torch.float16 for p in model.parameters()):
        from peft import prepare_model_for_kbit_training

        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    for p in model.parameters():
        p.requires_grad_(False)  # (with gradient checkpointing the trainer gives the blocks an input needing grad)
    return model


def apply(model, cfg: MethodConfig, gradient_checkpointing: bool = False):
    return lora.apply(prepare(model, cfg, gradient_checkpointing), cfg)


METHOD = Method("qlora", apply, help="trains `lora` adapters on a base quantized to 4 or 8 bits",
                section_help="Settings of `qlora`'s quantized base.", saves="adapter", section="qlora",
                settings_type=QLoraSettings, continues_lora=True, quantized_base=True, load_kwargs=load_kwargs)
