"""Memory estimates from the model's shape and the run's settings: pure functions, nothing is loaded.

Inference: weights are params x bytes per parameter, exactly (fp32: 4 bytes, so 1e9 parameters are 3.73 GiB), plus
the KV cache, 2 (K and V) x layers x kv_heads x head_dim x tokens x bytes.

Training is the sum of
  weights       the base as stored: params x bytes, or for QLoRA the decoder linears packed in 4 or 8 bits plus
                their quantization constants, the rest in the load dtype (method.qlora.upcast_fp32: in fp32)
  trainable     the trained parameters (all of them for full; LoRA matrices, prefix or prompt tensors otherwise)
                with their gradients and optimizer states: AdamW keeps 2 states, 8-bit AdamW 2 bytes, SGD none
  activations   what backward needs, per token: layers x (a_h x hidden + a_i x intermediate) x activation bytes,
                plus a_v x vocab bytes for the logits, their fp32 copy and the loss's softmax and gradient (the
                largest single part for small models with big vocabularies); with the fused, chunked loss
                (train.fused_loss) only one chunk's fp32 logits, turned in place into their gradient, and its cast
                copy: 8 bytes per (position, vocabulary entry) of a chunk. With gradient checkpointing only each
                layer's input is kept, plus one layer's worth recomputed in backward, plus a fitted share of the
                freed recomputations that the allocator keeps ("checkpointing").
  overhead      a constant (CUDA: allocator slack; CPU: the Python + torch + transformers process itself)
The a_* coefficients and the overhead are fitted per device type (on a CPU, bf16 autocast apart: `lora@bf16`) from
measured runs (`bench/memory_grid.py` on CPU, `bench/cuda_check.py` on an H200); `CONSTANTS` records the fitted
values and where they came from.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from weitiao.memory.shape import ModelShape

GiB = 2**30
DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "int8": 1, "int4": 0.5}

# Fitted per device type by bench/fit_memory.py from bench/results/memory-<device>.json (see constants.json's
# "fit" entries for the data, date and residuals). Per method family, "layers": [a_h, a_i] are bytes per token per
# layer per unit of hidden / intermediate size at 2-byte activations; "logits" is bytes per token per vocabulary
# entry; "overhead" is bytes.
CONSTANTS_FILE = Path(__file__).with_name("constants.json")
METHOD_FAMILY = {"full": "full", "freeze": "full", "lora": "lora", "qlora": "qlora", "prefix": "prefix",
                 "prompt": "prompt", "ptuning": "prompt"}


# the fused loss's (chunk, V) buffers: fp32 logits (4 bytes), turned in place into softmax - onehot, and that
# gradient cast to the weights' dtype for its two matmuls (at most 4 more)
FUSED_LOSS_BYTES = 8


def load_constants() -> dict:
    return json.loads(CONSTANTS_FILE.read_text())


@dataclass(frozen=True)
class TrainSettings:
    method: str = "lora"  # full | freeze | lora | qlora | prefix | prompt | ptuning
    seq: int = 512  # tokens per row (padded length)
    batch: int = 8  # rows per step per device
    precision: str = "bf16"  # fp32 | bf16 | fp16: activation dtype (autocast) and, for full, the weights' dtype
    weights_dtype: str = "float32"  # dtype the base is loaded in (CPU default fp32, CUDA default bf16)
    optimizer: str = "adamw"  # adamw | adamw_8bit | sgd
    gradient_checkpointing: bool = False
    lora_r: int = 16
    lora_targets: tuple = ("all-linear",)  # method.lora.target_modules
    qlora_bits: int = 4
    qlora_upcast: bool = False  # method.qlora.upcast_fp32: the unquantized weights cast to fp32
    double_quant: bool = True
    freeze_layers: int = 2
    virtual_tokens: int = 16
    device: str = "cuda"
    task: str = "sft"  # classify: the head outputs a few logits per row, not a vocabulary's worth per token
    # share of positions whose logits are computed: 1, or with train.logits_at_labels_only and padding-free
    # batches, the largest share of trained tokens in any one training example
    logit_fraction: float = 1.0
    # train.fused_loss: positions per chunk of the fused head-and-loss pass (0: the whole logits at once; prefix,
    # prompt and P-tuning always compute the whole logits)
    loss_chunk: int = 0


def inference_bytes(shape: ModelShape, dtype: str = "float32") -> int:
    """The weights alone: params x bytes per parameter (fp32: exactly 4 x params)."""
    return int(shape.params * DTYPE_BYTES[dtype])


def kv_cache_bytes(shape: ModelShape, tokens: int, batch: int = 1, dtype: str = "bfloat16") -> int:
    return int(2 * shape.layers * shape.kv_heads * shape.head_dim * tokens * batch * DTYPE_BYTES[dtype])


def lora_params(shape: ModelShape, r: int, targets: tuple = ("all-linear",)) -> int:
    """r x (in + out) per adapted layer (A is r x in, B is out x r): every decoder linear (`all-linear`) or those
    whose own name is one of `targets` (peft's target_modules, e.g. q_proj, v_proj)."""
    every = "all-linear" in targets
    return sum(r * (i + o) * n for name, i, o, n in shape.linear_shapes if every or name in targets)


def trainable_params(shape: ModelShape, s: TrainSettings) -> int:
    kv_dim = shape.kv_heads * shape.head_dim
    if s.method == "full":
        return shape.params
    if s.method == "freeze":
        per_layer = shape.linear_params // max(shape.layers, 1)
        return min(s.freeze_layers, shape.layers) * per_layer
    if s.method in ("lora", "qlora"):
        return lora_params(shape, s.lora_r, s.lora_targets)
    if s.method == "prefix":
        return s.virtual_tokens * shape.layers * 2 * kv_dim
    if s.method == "prompt":
        return s.virtual_tokens * shape.hidden
    if s.method == "ptuning":  # peft's MLP prompt encoder: embedding + 3 linears of width hidden
        return s.virtual_tokens * shape.hidden + 3 * (shape.hidden * shape.hidden + shape.hidden)
    raise ValueError(f"unknown method {s.method!r}")


def weights_bytes(shape: ModelShape, s: TrainSettings) -> int:
    w = DTYPE_BYTES[s.weights_dtype]
    if s.method != "qlora":
        return int(shape.params * w)
    if s.qlora_bits == 4:
        # NF4: 0.5 byte per weight + one absmax per 64 weights: fp32 (4 B), or with double quantization 1 byte
        # plus an fp32 constant per 256 blocks (Dettmers et al. 2023, section 3)
        constants = (1 + 4 / 256) / 64 if s.double_quant else 4 / 64
        packed = shape.linear_params * (0.5 + constants)
    else:
        packed = shape.linear_params * 1.0 + 4 * shape.linear_params ** 0.5  # int8 + a scale per row (order)
    rest = 4 if s.qlora_upcast else w  # embeddings, norms, head: unquantized
    return int(packed + (shape.params - shape.linear_params) * rest)


def optimizer_bytes_per_param(optimizer: str, dtype_bytes: float) -> float:
    return {"adamw": 2 * dtype_bytes, "adamw_8bit": 2.0, "sgd": 0.0}[optimizer]


def activation_family(s: TrainSettings) -> str:
    """Whose fitted activation constants apply. QLoRA whose unquantized weights (norms, embeddings) were cast to
    fp32 over a lower-precision load keeps its residual stream and norm outputs in fp32, about 1.5x the
    activations of QLoRA in the load dtype: its own constants (`qlora_upcast`). On an fp32 load the cast is a
    no-op."""
    if s.method == "qlora" and s.qlora_upcast and DTYPE_BYTES[s.weights_dtype] < 4:
        return "qlora_upcast"
    return METHOD_FAMILY[s.method]


def layer_constants(constants: dict, s: TrainSettings) -> list:
    """[a_h, a_i] for the settings: those fitted for the family at this precision where there are any (on a CPU,
    `lora@bf16`: bf16 autocast there leaves norm outputs, the residual stream of an fp32 load and the adapters'
    inputs in fp32 beside the bf16 matmul outputs, so half of the fp32 bytes undercounts), else the family's."""
    family = activation_family(s)
    return constants["layers"].get(f"{family}@{s.precision}", constants["layers"][family])


def training_estimate(shape: ModelShape, s: TrainSettings, constants: dict | None = None) -> dict:
    """A breakdown of peak training memory in bytes, and the total."""
    c = constants or load_constants()[s.device]
    a_h, a_i = layer_constants(c, s)
    trainable = trainable_params(shape, s)
    # full/freeze train the base's own weights (in the load dtype); adapters and prompts are fp32 (peft upcasts)
    train_dtype = DTYPE_BYTES[s.weights_dtype] if s.method in ("full", "freeze") else 4
    act = DTYPE_BYTES[s.precision]
    tokens = s.seq * s.batch
    per_layer = (a_h * shape.hidden + a_i * shape.intermediate) * act / 2  # a_* are for 2-byte activations
    layers = shape.layers
    if s.method == "freeze":
        layers = min(s.freeze_layers, shape.layers)  # backward stops at the first trained layer
    if s.gradient_checkpointing:
        # each layer's input, kept (exact), one layer's recomputed activations, and what the allocator keeps of
        # the recomputations freed layer after layer (fitted: "checkpointing", in a_h's units; on a CPU, glibc
        # keeps freed heap memory resident)
        layer_acts = tokens * (layers * shape.hidden * (act + c.get("checkpointing", 0.0) * act / 2) + per_layer)
    else:
        layer_acts = tokens * layers * per_layer
    if s.task == "classify":
        logits = 0
    elif s.loss_chunk and METHOD_FAMILY[s.method] not in ("prefix", "prompt"):  # virtual tokens: whole logits
        logits = min(s.loss_chunk, tokens * s.logit_fraction) * FUSED_LOSS_BYTES * shape.vocab
    else:
        logits = tokens * s.logit_fraction * c["logits"] * shape.vocab
    parts = {
        "weights": weights_bytes(shape, s),
        "trainable_weights": 0 if s.method in ("full", "freeze") else trainable * train_dtype,
        "gradients": trainable * train_dtype,
        "optimizer_states": int(trainable * optimizer_bytes_per_param(s.optimizer, train_dtype)),
        "activations": int(layer_acts),
        "logits_and_loss": int(logits),
        "overhead": int(c["overhead"]),
    }
    parts["total"] = int(sum(parts.values()))
    parts["trainable_params"] = trainable
    return parts


def distributed_estimate(parts: dict, s: TrainSettings, n_gpus: int, strategy: str,
                         constants: dict | None = None) -> int:
    """Per-GPU bytes under DDP (everything replicated), ZeRO-1 (optimizer states sharded), ZeRO-2 (+ gradients),
    ZeRO-3 / FSDP full shard (+ weights). Activations are per GPU's own batch either way. Under FSDP, plus what a
    process keeps of its gathered buffers where that was measured (`fsdp_retained_bytes`). `constants`: the
    device's, as for training_estimate."""
    shard = {"ddp": (), "zero1": ("optimizer_states",), "zero2": ("optimizer_states", "gradients"),
             "zero3": ("optimizer_states", "gradients", "weights", "trainable_weights"),
             "fsdp": ("optimizer_states", "gradients", "weights", "trainable_weights")}[strategy]
    total = 0
    for name, value in parts.items():
        if name in ("total", "trainable_params"):
            continue
        total += value / n_gpus if name in shard else value
    if strategy == "fsdp":
        total += fsdp_retained_bytes(parts, load_constants()[s.device] if constants is None else constants)
    return int(total)


def fsdp_retained_bytes(parts: dict, constants: dict) -> float:
    """What one FSDP process keeps, beyond its live tensors, of the buffers that FSDP allocates and frees layer
    after layer: each layer's weights all-gathered for its forward and again for its backward, and its unsharded
    gradients before the reduce-scatter (FSDP, arXiv:2304.11277). On a CPU glibc keeps such freed heap memory
    resident. Measured on SmolLM2-135M full fine-tuning over 2 processes: 1.0 GiB of live tensors and 2.6 GiB of
    RSS between steps. `fsdp_retained` (fitted by bench/fsdp_memory.py, CPU only) gives it in units of the
    unsharded weights and of the unsharded gradients; 0 where it was not measured (CUDA: its caching allocator
    keeps freed blocks for reuse, which may behave otherwise)."""
    c = constants.get("fsdp_retained")
    if not c:
        return 0.0
    return c["weights"] * (parts["weights"] + parts["trainable_weights"]) + c["gradients"] * parts["gradients"]
