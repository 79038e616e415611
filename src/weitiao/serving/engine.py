"""Token-by-token generation for chat and the server: one conversation at a time, streamed as text.

Every model decodes through a KV-cache loop written here, one token per step, so streaming needs no thread and
`min_tokens`, stop strings and finish reasons are exact. Prompt-learning adapters (prefix, prompt, ptuning) use
weitiao's virtual-token decoder (`evaluation.virtual_tokens.decode_steps`), because peft's `generate()` gets them
wrong with the cache on. Batched, non-interactive generation (`weitiao generate`, evaluation) uses
`evaluation.generate`, which pads and batches rows instead.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Iterator

import torch

from weitiao.methods import unwrapped
from weitiao.serving.loaded import Loaded


@dataclass
class Sampling:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy, the decoding `weitiao eval` scores with
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)  # stop strings, cut from the text
    min_new_tokens: int = 0  # stop tokens are masked until this many tokens were generated
    seed: int | None = None


@dataclass
class Finished:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (a stop token or string) or "length"


class Engine:
    """Generation over a `Loaded` model. One request decodes at a time (`lock`): the model's adapters are
    switched per request, and two decoding loops on one CPU would only slow each other down."""

    def __init__(self, loaded: Loaded, serve_base: bool = False):
        self.loaded = loaded
        self.lock = threading.Lock()
        self.base_name = f"{loaded.name}:base" if serve_base and loaded.adapters else None

    @property
    def names(self) -> list[str]:
        """Model names a request may ask for; the first is the default."""
        names = [self.loaded.name] + [n for n in self.loaded.adapters if n != self.loaded.name]
        return names + ([self.base_name] if self.base_name else [])

    def render(self, messages: list[dict]) -> str:
        """The prompt for a conversation, with the template the run was trained with."""
        return self.loaded.template.render(self.loaded.tokenizer, messages, add_generation_prompt=True)

    def encode(self, prompt: str) -> list[int]:
        # the template already holds every special token; training tokenized prompts the same way
        return self.loaded.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    @contextlib.contextmanager
    def using(self, name: str | None):
        """Activate the adapter served as `name` (the default when None) for the duration of a request."""
        model = self.loaded.model
        name = name or self.loaded.name
        if name == self.base_name:
            with model.disable_adapter():
                yield
            return
        adapter = self.loaded.adapters.get(name)
        if adapter is not None and getattr(model, "active_adapter", adapter) != adapter:
            model.set_adapter(adapter)
        yield

    def stream(self, prompt_ids: list[int], sampling: Sampling, name: str | None = None,
               result: list | None = None) -> Iterator[str]:
        """Yields the answer's text in pieces as tokens arrive; appends a `Finished` to `result` at the end.

        Holds the lock from the first to the last token. Text that could be the start of a stop string is held
        back until it is known not to be one, so a stop string never reaches the client.
        """
        tokenizer = self.loaded.tokenizer
        stop_ids = set(self.loaded.template.stop_ids)
        generated: list[int] = []
        emitted, text = "", ""
        reason, cut_by_string = "length", False
        hold = max((len(s) for s in sampling.stop), default=1) - 1
        with self.lock, self.using(name):
            for token in self._tokens(prompt_ids, sampling):
                if token in stop_ids:
                    reason = "stop"
                    break
                generated.append(token)
                text = tokenizer.decode(generated, skip_special_tokens=True)
                if text.endswith("\ufffd"):  # a multi-byte character split across tokens: wait for the rest
                    continue
                cut = _first_stop(text, sampling.stop)
                if cut is not None:
                    text, reason, cut_by_string = text[:cut], "stop", True
                    break
                safe = text[: len(text) - hold]
                if len(safe) > len(emitted):
                    yield safe[len(emitted):]
                    emitted = safe
            if not cut_by_string:
                text = tokenizer.decode(generated, skip_special_tokens=True)
            if len(text) > len(emitted):  # the held-back tail
                yield text[len(emitted):]
            emitted = text
        if result is not None:
            result.append(Finished(emitted, len(prompt_ids), len(generated), reason))

    def complete(self, prompt_ids: list[int], sampling: Sampling, name: str | None = None) -> Finished:
        result: list[Finished] = []
        for _ in self.stream(prompt_ids, sampling, name, result):
            pass
        return result[0]

    @torch.no_grad()
    def _tokens(self, prompt_ids: list[int], sampling: Sampling) -> Iterator[int]:
        """Token ids, one per step, for a single unpadded prompt; the caller stops on a stop token."""
        from weitiao.evaluation.generate import contiguous_head_input
        from weitiao.evaluation.virtual_tokens import cache_kwarg, decode_steps, returned_cache, uses_virtual_tokens

        model, amp = self.loaded.model, self.loaded.amp_dtype
        model.eval()
        device = next(model.parameters()).device
        ids = torch.tensor([prompt_ids], device=device)
        stop_ids = torch.tensor(list(self.loaded.template.stop_ids), device=device)
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        pick = _picker(sampling, stop_ids)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None), contiguous_head_input(model):
            if uses_virtual_tokens(model):
                steps = decode_steps(model, ids, torch.ones_like(ids), sampling.max_new_tokens,
                                     tuple(self.loaded.template.stop_ids), self.loaded.tokenizer.pad_token_id,
                                     _Processor(pick))
                for token in steps:
                    yield int(token[0])
                return
            # logits (1, T, V) for the prompt, then (1, 1, V) per step, reusing the cache
            inner = unwrapped(model)
            cache_arg = cache_kwarg(inner)  # `cache` in transformers >= 5.x, `past_key_values` before
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
            sequence = ids
            for step in range(sampling.max_new_tokens):
                token = pick(sequence, out.logits[:, -1, :].float(), step)
                yield int(token[0])
                sequence = torch.cat([sequence, token[:, None]], dim=1)
                out = model(input_ids=token[:, None], use_cache=True, **{cache_arg: returned_cache(out)})


def _picker(sampling: Sampling, stop_ids: torch.Tensor):
    """pick(sequence (1, T), logits (1, V), step) -> token (1,): greedy, or temperature/top-p sampling."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

    warpers = LogitsProcessorList()
    if sampling.temperature > 0:
        warpers.append(TemperatureLogitsWarper(sampling.temperature))
        if sampling.top_p < 1.0:
            warpers.append(TopPLogitsWarper(sampling.top_p))

    def pick(sequence, logits, step):
        if step < sampling.min_new_tokens:
            logits = logits.index_fill(-1, stop_ids, float("-inf"))
        if sampling.temperature > 0:
            logits = warpers(sequence, logits)
            return torch.multinomial(torch.softmax(logits, dim=-1), 1).squeeze(1)
        return logits.argmax(dim=-1)

    return pick


class _Processor:
    """Adapts `pick` to the virtual-token decoder, which asks for processed logits and samples itself only when a
    processor is given: returning one-hot logits makes its choice exactly ours."""

    def __init__(self, pick):
        self.pick, self.step = pick, 0

    def __call__(self, sequence, logits):
        token = self.pick(sequence, logits, self.step)
        self.step += 1
        out = torch.full_like(logits, float("-inf"))
        return out.scatter_(-1, token[:, None], 0.0)


def _first_stop(text: str, stops: list[str]) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None
