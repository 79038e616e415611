"""The shape of a model, from its config alone: built on PyTorch's meta device, so no weight is read or allocated.

A 70B config.json is counted in about 1.5 s. The counts are exact (they are the module's own parameters), split
into the parts the memory estimate treats differently: input embeddings, output head (zero when tied), the linear
layers inside the decoder blocks (what LoRA adapts and what bitsandbytes quantizes), and the rest (norms, biases).
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
    linear_shapes: tuple = field(default=())  # ((in_features, out_features, count), ...) of those layers
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
    from weitiao.models.loading import local_folder, resolve_source

    folder = Path(local_folder(resolve_source(model)))
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"{model}: no config.json found")
    return json.loads((folder / "config.json").read_text())


def model_shape(config: dict, task: str = "sft") -> ModelShape:
    """Count parameters by instantiating the architecture on the meta device."""
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
    shapes: dict[tuple[int, int], int] = {}
    linear_params = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and module is not head and module.weight is not getattr(
                embeddings, "weight", None):
            shapes[(module.in_features, module.out_features)] = shapes.get(
                (module.in_features, module.out_features), 0) + 1
            linear_params += module.weight.numel()
    text = hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config
    heads = getattr(text, "num_attention_heads", 0) or 0
    hidden = getattr(text, "hidden_size", 0) or 0
    return ModelShape(
        model_type=model_type, params=params, embedding_params=embedding_params, head_params=head_params,
        linear_params=linear_params, linear_shapes=tuple((i, o, n) for (i, o), n in sorted(shapes.items())),
        layers=getattr(text, "num_hidden_layers", 0) or 0, hidden=hidden,
        intermediate=getattr(text, "intermediate_size", 0) or 0, heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=getattr(text, "head_dim", None) or (hidden // heads if heads else 0),
        vocab=getattr(text, "vocab_size", 0) or 0,
    )
