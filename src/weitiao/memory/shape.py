"""The shape of a model, from its config alone: no weight is read or allocated.

The counts are exact, split into the parts the memory estimate treats differently: input embeddings, output head
(zero when tied), the linear layers inside the decoder blocks (what LoRA adapts and what bitsandbytes quantizes),
and the rest (norms, biases). Llama-family decoders (llama, mistral, qwen2, qwen3) are counted from the config's
numbers (`analytic_shape`, no torch import: a 70B config answers in well under a second); any other architecture
is built on PyTorch's meta device and its modules counted (several seconds on a small CPU, mostly importing
transformers). A test checks the two agree on every architecture the formula covers.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from weitiao.errors import ModelNotFoundError


@dataclass(frozen=True)
class ModelShape:
    model_type: str
    params: int  # every parameter, tied ones once
    embedding_params: int  # input token embeddings
    head_params: int  # output projection; 0 when tied to the embeddings
    linear_params: int  # weights of the nn.Linear layers inside the decoder blocks
    # ((name, in_features, out_features, count), ...) of those layers, by the module's own name (q_proj, ...): what
    # LoRA's target_modules select
    linear_shapes: tuple = field(default=())
    layers: int = 0
    hidden: int = 0
    intermediate: int = 0
    heads: int = 0
    kv_heads: int = 0
    head_dim: int = 0
    vocab: int = 0

    @property
    def other_params(self) -> int:
        return self.params - self.embedding_params - self.head_params - self.linear_params

    def as_dict(self) -> dict:
        return asdict(self)


def load_config_dict(model: str) -> dict:
    """config.json of a model given as a folder, a config.json file, or a bundled name / GGUF (through weitiao's
    converted cache folder, which holds the config)."""
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".json":
        return json.loads(path.read_text())
    if path.is_dir() and (path / "config.json").is_file():
        return json.loads((path / "config.json").read_text())
    from weitiao.models import hub
    from weitiao.models.loading import BUNDLED, local_folder, resolve_source

    if hub.is_hub_id(model) and model not in BUNDLED and not path.exists():
        folder, _ = hub.snapshot(model, "model", None, "model", ["config.json"])  # the shape only, no weights
    else:
        folder = Path(local_folder(resolve_source(model)))
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"{model}: no config.json found")
    return json.loads((folder / "config.json").read_text())


# The fields a Llama-family count needs; without all of them the architecture's defaults would apply, which only
# transformers knows, so such configs are built on the meta device instead.
ANALYTIC_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
ANALYTIC_TYPES = {"llama", "mistral", "qwen2", "qwen3"}


def analytic_shape(config: dict, task: str = "sft") -> ModelShape | None:
    """The shape of a Llama-family decoder from its config numbers, or None for anything else.

    Per layer: attention q (H x n_heads*d), k and v (H x n_kv*d each), o (n_heads*d x H); a gated MLP of gate and up
    (H x I) and down (I x H); two RMSNorms of H. Biases: q/k/v always for qwen2; q/k/v/o with `attention_bias`
    (llama, qwen3); the MLP's with `mlp_bias` (llama). qwen3 adds per-head RMSNorms on q and k (d each). Then a
    final norm, embeddings V x H and an output head V x H unless tied; `classify` replaces the head with a
    bias-free score layer of H x num_labels.
    """
    model_type = config.get("model_type")
    if model_type not in ANALYTIC_TYPES or any(config.get(k) is None for k in ANALYTIC_FIELDS):
        return None
    if model_type != "llama" and config.get("num_key_value_heads") is None:
        return None  # mistral, qwen2 and qwen3 default to a fixed number of kv heads, not to num_attention_heads
    if model_type == "qwen3" and config.get("head_dim") is None:
        return None  # qwen3's default head_dim is 128, not hidden_size / heads
    V, H, I, L = (int(config[k]) for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers"))
    heads = int(config["num_attention_heads"])
    kv = int(config.get("num_key_value_heads") or heads)
    d = int(config.get("head_dim") or H // heads)
    qkv_bias = model_type == "qwen2" or bool(config.get("attention_bias", False))
    o_bias = model_type in ("llama", "qwen3") and bool(config.get("attention_bias", False))
    mlp_bias = model_type == "llama" and bool(config.get("mlp_bias", False))
    shapes = {("q_proj", H, heads * d): L, ("k_proj", H, kv * d): L, ("v_proj", H, kv * d): L,
              ("o_proj", heads * d, H): L, ("gate_proj", H, I): L, ("up_proj", H, I): L, ("down_proj", I, H): L}
    labels = 0
    if task == "classify":  # a bias-free score layer: counted with the linear layers, as the meta count does
        labels = int(config.get("num_labels") or len(config.get("id2label") or {}) or 2)
        shapes[("score", H, labels)] = 1
    linear = sum(i * o * n for (_, i, o), n in shapes.items())
    per_layer_other = (2 * H + (heads * d + 2 * kv * d if qkv_bias else 0) + (H if o_bias else 0)
                       + (2 * I + H if mlp_bias else 0) + (2 * d if model_type == "qwen3" else 0))
    embeddings = V * H
    tied = task != "classify" and bool(config.get("tie_word_embeddings", False))  # False: all four's default
    head = 0 if task == "classify" or tied else V * H
    params = embeddings + head + linear + L * per_layer_other + H
    return ModelShape(
        model_type=model_type, params=params, embedding_params=embeddings, head_params=head, linear_params=linear,
        linear_shapes=tuple((name, i, o, n) for (name, i, o), n in sorted(shapes.items())), layers=L, hidden=H,
        intermediate=I,
        heads=heads, kv_heads=kv, head_dim=d, vocab=V)


def model_shape(config: dict, task: str = "sft") -> ModelShape:
    """Count parameters: by formula for Llama-family decoders, else by instantiating the architecture on the meta
    device."""
    analytic = analytic_shape(config, task)
    return analytic if analytic is not None else meta_shape(config, task)


def meta_shape(config: dict, task: str = "sft") -> ModelShape:
    """Count parameters by instantiating the architecture on the meta device (any architecture transformers
    knows)."""
    import torch
    from torch import nn
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    model_type = config.get("model_type")
    if not model_type:
        raise ModelNotFoundError("config.json has no model_type")
    hf_config = AutoConfig.for_model(**{k: v for k, v in config.items() if k != "model_type"}, model_type=model_type)
    auto = AutoModelForSequenceClassification if task == "classify" else AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(hf_config)
    params = sum(p.numel() for p in model.parameters())  # .parameters() yields a tied weight once
    embeddings = model.get_input_embeddings()
    embedding_params = embeddings.weight.numel() if embeddings is not None else 0
    head = model.get_output_embeddings() if task != "classify" else None
    tied = head is not None and embeddings is not None and head.weight is embeddings.weight
    head_params = 0 if head is None or tied else head.weight.numel()
    shapes: dict[tuple[str, int, int], int] = {}
    linear_params = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module is not head and module.weight is not getattr(
                embeddings, "weight", None):
            key = (name.rsplit(".", 1)[-1], module.in_features, module.out_features)
            shapes[key] = shapes.get(key, 0) + 1
            linear_params += module.weight.numel()
    text = hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config
    heads = getattr(text, "num_attention_heads", 0) or 0
    hidden = getattr(text, "hidden_size", 0) or 0
    return ModelShape(
        model_type=model_type, params=params, embedding_params=embedding_params, head_params=head_params,
        linear_params=linear_params,
        linear_shapes=tuple((name, i, o, n) for (name, i, o), n in sorted(shapes.items())),
        layers=getattr(text, "num_hidden_layers", 0) or 0, hidden=hidden,
        intermediate=getattr(text, "intermediate_size", 0) or 0, heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=getattr(text, "head_dim", None) or (hidden // heads if heads else 0),
        vocab=getattr(text, "vocab_size", 0) or 0,
    )
