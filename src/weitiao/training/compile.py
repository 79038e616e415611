"""`train.compile`: torch.compile of each decoder layer (regional compilation).

A decoder layer's forward is mostly small elementwise operations around a few matmuls: RMSNorm's fp32 upcast and
scale, rotary embeddings, SiLU(gate) * up, the residual adds, LoRA's scaling and add. In eager mode each is its own
kernel that reads and writes a (T, d) tensor; inductor fuses runs of them into one loop over the tensor.

Compiling the repeated layer class rather than the whole model (PyTorch's regional compilation recipe) compiles
one graph that every layer reuses, so the first step pays for one layer's compilation, not thirty. `dynamic=True`
keeps the row length symbolic, so padding-free rows of new lengths need not each compile their own graph. `nn.Module.compile` compiles
in place: the module tree, the parameter names and so the saved weights are unchanged. The layers are compiled for
training only: afterwards, generation with a KV cache (a different graph per layer index) runs them eagerly.

What it costs and buys is measured by bench/step_ab.py (the same steps eager and compiled, in one process): for
SmolLM2-135M LoRA in bf16 on a 2-core Xeon, 1.14x faster steps after a 44 s first pass, so about 177 steps to
break even; a 145-step bench/speed.py run came out at 0.98x the eager tokens/s, compilation included.
"""
from __future__ import annotations

import contextlib


def decoder_layers(model) -> list:
    """The model's repeated blocks: the modules of the classes transformers keeps whole when it splits a model
    across devices (`_no_split_modules`, e.g. LlamaDecoderLayer); `model` is a transformers PreTrainedModel."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names]


@contextlib.contextmanager
def compiled_layers(model, enabled: bool):
    """Within the block each decoder layer of `model` (a transformers PreTrainedModel) runs compiled; yields how
    many layers that is (0 when not `enabled` or none was found: nothing changes). Afterwards they run eagerly."""
    layers = decoder_layers(model) if enabled else []
    for layer in layers:
        layer.compile(dynamic=True)
    try:
        yield len(layers)
    finally:
        for layer in layers:
            # nn.Module.compile's only state: the compiled call, used while set; there is no public way to drop it
            layer._compiled_call_impl = None
