"""Rephrasings from the config (`rephrasings_for`: its rules, or a chat model) and the chat model that writes
them.

The model's rephrasings are sampled in batches, checked, and appended to a cache after every batch.

The distinct texts to reword are sorted by length and cut into fixed batches once, from the whole list, before
anything is asked. A batch is asked again only while it has a text with no finished cache entry, and each batch's
sampling is seeded from its own texts. So a run that was killed half-way and started again skips the batches it
had finished, asks the rest exactly as an uninterrupted run would, and ends with the same rephrasings.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from pathlib import Path

from weitiao.errors import WeitiaoError
from weitiao.evaluation.faithful import has_cjk
from weitiao.evaluation.rephrase import (
    Rephrasings,
    load_rules,
    problem_kind,
    problems,
    report,
    rule_rephrasings_checked,
    rules_path,
    source_identity,
    texts_to_reword,
)



class ModelRephraser:
    """Samples rephrasings of texts from a chat model. A text's cache entry holds its accepted rephrasings, how
    many were asked for, and what was rejected on the way, so a cached text reports the same as a fresh one."""

    def __init__(self, model, tokenizer, template, model_id: str, prompt: str, cache: Path | None,
                 rows_per_call: int = 16, max_new_tokens: int = 64, tries: int = 4, amp_dtype=None):
        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.model_id, self.prompt, self.cache = model_id, prompt, cache
        # generated rows per batch: each text of a batch is sampled as often as it still needs rephrasings
        self.rows_per_call = rows_per_call
        self.max_new_tokens, self.tries, self.amp = max_new_tokens, tries, amp_dtype
        self.cached = read_cache(cache)
        self.rejected: Counter = Counter()  # problem kind -> candidates rejected, over the texts of the last call
        self.rejected_examples: list[dict] = []

    def key(self, text: str) -> str:
        return hashlib.sha256(json.dumps([self.model_id, self.prompt, text]).encode()).hexdigest()[:24]

    def done(self, text: str, k: int) -> bool:
        entry = self.cached.get(self.key(text))
        return entry is not None and (len(entry["rephrasings"]) >= k or entry["asked"] >= k)

    def rephrase_all(self, texts: dict[str, dict], k: int, log) -> dict[str, list[str]]:
        """text -> up to k accepted rephrasings. `texts` maps each text to its checks' keyword arguments
        (`keep`: answer values it must still state; `seen`: texts it must not become)."""
        from tqdm.auto import tqdm

        order = sorted(texts, key=lambda t: (len(t), t))
        per_batch = max(1, self.rows_per_call // k)
        todo = [t for t in order if not self.done(t, k)]
        if todo:
            log(f"rephrase: asking {self.model_id} for {k} rephrasings of {len(todo)} distinct text(s) "
                f"({len(order) - len(todo)} cached)")
        bar = tqdm(total=len(order), initial=len(order) - len(todo), unit="text", desc="rephrase", disable=not todo)
        accepted = rejected = 0
        for start in range(0, len(order), per_batch):
            asked = [t for t in order[start:start + per_batch] if not self.done(t, k)]
            if not asked:
                continue
            entries = {self.key(t): entry for t, entry in self.ask_batch(asked, texts, k).items()}
            append_cache(self.cache, entries)
            self.cached.update(entries)
            accepted += sum(len(e["rephrasings"]) for e in entries.values())
            rejected += sum(sum(e["rejected"].values()) for e in entries.values())
            bar.update(len(asked))
            bar.set_postfix(accepted=accepted, rejected=rejected)
        bar.close()
        return self.collect(order, texts, k)

    def collect(self, order: list[str], texts: dict[str, dict], k: int) -> dict[str, list[str]]:
        """Each text's cached rephrasings, checked again (the rows behind a text, or `seen`, may differ from when
        they were cached), and the rejections of all of them added up."""
        self.rejected, self.rejected_examples = Counter(), []
        out = {}
        for t in order:
            entry = self.cached[self.key(t)]
            self.rejected.update(entry["rejected"])
            self.rejected_examples += entry["examples"][:max(0, 10 - len(self.rejected_examples))]
            kept: list[str] = []
            for candidate in entry["rephrasings"]:
                why = problems(t, candidate, kept, **texts[t])
                if why:
                    self.rejected.update(problem_kind(p) for p in why)
                    if len(self.rejected_examples) < 10:
                        self.rejected_examples.append({"text": t, "candidate": candidate, "problems": why})
                else:
                    kept.append(candidate)
            out[t] = kept[:k]
        return out

    def ask_batch(self, batch: list[str], texts: dict[str, dict], k: int) -> dict[str, dict]:
        """Up to `tries` rounds of sampling for the texts of one batch, seeded from the batch itself; each text's
        cache entry."""
        entries = {t: {"rephrasings": [], "asked": k, "rejected": Counter(), "examples": []} for t in batch}
        for attempt in range(self.tries):
            asked = [t for t in batch for _ in range(k - len(entries[t]["rephrasings"]))]
            if not asked:
                break
            answers = self.sample(asked, batch_seed(batch, attempt))
            for t, answer in zip(asked, answers):
                entry, candidate = entries[t], clean_answer(answer)
                if len(entry["rephrasings"]) >= k:
                    continue  # the text's earlier samples in this round were enough
                why = problems(t, candidate, entry["rephrasings"], **texts[t])
                if not why:
                    entry["rephrasings"].append(candidate)
                    continue
                entry["rejected"].update(problem_kind(p) for p in why)
                if len(entry["examples"]) < 2:
                    entry["examples"].append({"text": t, "candidate": candidate, "problems": why})
        return {t: {**e, "rejected": dict(e["rejected"])} for t, e in entries.items()}


    def prompt_for(self, text: str) -> str:
        """The rephrasing request for `text`, in its language: the Chinese prompt for a Chinese text when the
        prompt is the default one."""
        from weitiao.config import REPHRASE_PROMPT, REPHRASE_PROMPT_ZH

        prompt = REPHRASE_PROMPT_ZH if self.prompt == REPHRASE_PROMPT and has_cjk(text) else self.prompt
        return prompt.format(question=text)

    def sample(self, texts: list[str], seed: int) -> list[str]:
        """One sampled answer per text (texts repeat when a text needs several), seeded."""
        import torch

        from weitiao.config import GenerationConfig
        from weitiao.evaluation.generate import generate

        gen = GenerationConfig(max_new_tokens=self.max_new_tokens, batch_size=self.rows_per_call, do_sample=True,
                               temperature=0.9, top_p=0.95)
        prompts = [self.template.render(self.tokenizer, [{"role": "user", "content": self.prompt_for(t)}],
                                        add_generation_prompt=True) for t in texts]
        with torch.random.fork_rng():  # sampled, the same on every run, and the caller's RNG untouched
            torch.manual_seed(seed)
            return generate(self.model, self.tokenizer, prompts, gen, self.template.stop_ids, self.amp,
                            first_line=True)


class EndpointRephraser(ModelRephraser):
    """The same sampling, checking and cache, with the rephrasings written by a model behind an OpenAI-compatible
    HTTP endpoint (vLLM, Ollama, llama.cpp's server, `weitiao serve`): a 7B+ model writes far fewer rewordings that
    fail the checks than a 135M one. One chat completion per sample, with a seed derived from the batch; plain
    urllib (no client library needed), the key, if any, from the environment."""

    def __init__(self, url: str, model_name: str, api_key: str | None, prompt: str, cache: Path | None,
                 rows_per_call: int = 16, timeout: float = 120.0):
        super().__init__(None, None, None, f"{model_name} at {url}", prompt, cache, rows_per_call)
        self.url, self.model_name, self.api_key, self.timeout = url.rstrip("/"), model_name, api_key, timeout

    def sample(self, texts: list[str], seed: int) -> list[str]:
        out = []
        for i, t in enumerate(texts):
            body = {"model": self.model_name, "messages": [{"role": "user", "content": self.prompt_for(t)}],
                    "temperature": 0.9, "top_p": 0.95, "max_tokens": self.max_new_tokens, "seed": seed + i}
            reply = endpoint_call(self.url, "/chat/completions", self.api_key, body, self.timeout)
            try:
                out.append(clean_answer(reply["choices"][0]["message"]["content"] or ""))
            except (KeyError, IndexError, TypeError):
                raise WeitiaoError(f"rephrase.model {self.url}: the reply has no choices[0].message.content "
                                   f"({json.dumps(reply, ensure_ascii=False)[:200]})") from None
        return out


def endpoint_call(url: str, path: str, api_key: str | None, body: dict | None, timeout: float) -> dict:
    """GET (body None) or POST JSON to an OpenAI-compatible endpoint; any failure is one WeitiaoError naming the
    URL and what the server said."""
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
    data = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
    request = urllib.request.Request(url + path, data=data, headers=headers, method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        detail = err.read().decode("utf-8", "replace")[:300]
        raise WeitiaoError(f"rephrase.model {url}: {path} answered HTTP {err.code}: {detail}") from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise WeitiaoError(f"rephrase.model {url}: cannot reach {url + path} ({err})") from None


def endpoint_rephraser(cfg, cache: Path) -> EndpointRephraser:
    """The rephraser of `rephrase.model: http(s)://HOST/v1`: the served model named by `rephrase.endpoint_model`,
    or the first one the endpoint lists; the API key from the variable `rephrase.api_key_env` names."""
    r = cfg.rephrase
    key = os.environ.get(r.api_key_env) if r.api_key_env else None
    name = r.endpoint_model
    if not name:
        listed = endpoint_call(r.model.rstrip("/"), "/models", key, None, 30.0).get("data") or []
        if not listed:
            raise WeitiaoError(f"rephrase.model {r.model}: /models lists no model; set rephrase.endpoint_model")
        name = listed[0]["id"]
    return EndpointRephraser(r.model, name, key, r.prompt, cache, r.batch_size)


def is_endpoint(model: str | None) -> bool:
    return bool(model) and str(model).startswith(("http://", "https://"))


def batch_seed(batch: list[str], attempt: int) -> int:
    return int(hashlib.sha256(json.dumps([batch, attempt]).encode()).hexdigest()[:8], 16)


def clean_answer(text: str) -> str:
    """A model's reply reduced to the rephrased question: the first non-empty line, without quotes or a label."""
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    # "Rewrite request: ...", "Re: ...", "Rephrased question: ...", "改写后的请求：..."
    label = re.match(r"^([\w' -]{0,40})[:：]\s*", line)
    if label and re.search(r"rephras|rewrit|paraphras|request|question|version|^re$|改写|请求|问题|重述|说法",
                           label.group(1).strip(), re.I):
        line = line[label.end():]
    return line.strip().strip('"“”\'「」').strip()


def read_cache(path: Path | None) -> dict[str, dict]:
    """key -> {"rephrasings", "asked", "rejected", "examples"}; a later line for the same key wins. Lines from
    before `asked` was recorded count as asked for as many as they hold."""
    if path is None or not path.is_file():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            found = [str(x) for x in row["rephrasings"]]
            out[row["key"]] = {"rephrasings": found, "asked": int(row.get("asked", len(found))),
                               "rejected": {str(k): int(v) for k, v in row.get("rejected", {}).items()},
                               "examples": list(row.get("examples", []))}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            continue  # a damaged line (a write cut short) is asked again, not trusted
    return out


def append_cache(path: Path | None, entries: dict[str, dict]) -> None:
    """One batch's entries appended and flushed to disk, so a kill loses at most the batch in flight."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps({"key": key, **entry}, ensure_ascii=False) + "\n" for key, entry in entries.items())
    with open(path, "a+b") as f:
        if f.seek(0, os.SEEK_END) and (f.seek(-1, os.SEEK_END), f.read(1))[1] != b"\n":
            lines = "\n" + lines  # a line cut short by a kill stays on its own line, and is skipped on reading
        f.write(lines.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def rephrasings_for(cfg, examples: list, log, base=None, seen: frozenset = frozenset()) -> Rephrasings:
    """Up to `rephrase.k` faithful rephrasings of each example's question, from the config's rules or model.

    `base`: (model, tokenizer, template) already loaded for `model.name_or_path`, used when `rephrase.model` is
    `base`; any other model is loaded here. `seen`: `seen_texts` of the training rows (evaluation)."""
    r = cfg.rephrase
    texts = texts_to_reword(examples, r.target, seen)
    if r.templates:
        out = rule_rephrasings_checked(load_rules(rules_path(cfg)), texts, r.k)
        out.target, out.source, out.source_id = r.target, f"rules {rules_path(cfg)}", source_identity(cfg)
    else:
        out = model_rephrasings(cfg, texts, log, base)
    report(out, out.coverage(examples, r.k), log)
    return out



def model_rephrasings(cfg, texts: dict[str, dict], log, base) -> Rephrasings:
    from weitiao.models.loading import cache_dir

    r = cfg.rephrase
    if not r.model:
        raise WeitiaoError("--rephrase: set rephrase.templates (a file of rules) or rephrase.model (a model that "
                           "writes the rephrasings, e.g. rephrase.model=base)")
    cache = Path(r.cache) if r.cache else cache_dir() / "rephrase.jsonl"
    if is_endpoint(r.model):
        rephraser = endpoint_rephraser(cfg, cache)
    else:
        if r.model == "base" and base is not None:
            model, tokenizer, template = base
            model_id = cfg.model.name_or_path
        else:
            model, tokenizer, template, model_id = load_chat_model(
                cfg, cfg.model.name_or_path if r.model == "base" else r.model)
        rephraser = ModelRephraser(model, tokenizer, template, str(model_id), r.prompt, cache, r.batch_size)
    by_text = rephraser.rephrase_all(texts, r.k, log)
    return Rephrasings(r.target, f"model {rephraser.model_id}", source_identity(cfg), by_text,
                       dict(rephraser.rejected), rephraser.rejected_examples)


def load_chat_model(cfg, name: str):
    """(model, tokenizer, template, label) of a local or bundled chat model, as the config's model is loaded."""
    from weitiao.models.loading import load_model, pick_device, pick_dtype
    from weitiao.models.resolve import find_model

    source, folder, tokenizer, template = find_model(cfg, name)
    device = pick_device(cfg.model.device)
    model = load_model(folder, pick_dtype(cfg.model.dtype, device), device, cfg.model.trust_remote_code,
                       cfg.model.attn_implementation, {})
    return model, tokenizer, template, source.label
