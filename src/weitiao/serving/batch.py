"""`weitiao generate`: answer every row of a file, in batches, into JSONL; an interrupted run continues.

Input rows (json, jsonl, csv or parquet), each one of:
  - {"messages": [...]} ending with a user turn (the prompt), or with an assistant turn (kept as `reference`);
  - {"prompt": "..."}: one user turn;
  - a row in the run's training format (`data.format`): its last answer becomes `reference`.
Output: one JSON line per input row, in input order: {"index", "where", "messages", "output"[, "reference"]}.
Each batch is appended and flushed as it finishes. Restarting with the same input continues after the last
complete line (a half-written last line, from a kill, is dropped); `--overwrite` starts over.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from weitiao.config import GenerationConfig
from weitiao.data.formats import RowProblem, check_turns, to_example
from weitiao.data.readers import read_rows, resolve_paths
from weitiao.errors import DataError, WeitiaoError


@dataclass
class PromptRow:
    where: str
    messages: list[dict]  # ends with a user turn
    reference: str | None


def read_prompts(path: str, fmt: str | None, columns: dict | None = None, system: str | None = None) -> list[PromptRow]:
    """Every row of `path` as a prompt; all bad rows are reported together, naming file and line."""
    paths = resolve_paths([path], ".", "input")
    rows, bad = read_rows(paths)
    problems = [str(b) for b in bad]
    out: list[PromptRow] = []
    for row in rows:
        try:
            out.append(_prompt_row(row, fmt, columns or {}, system))
        except RowProblem as err:
            problems.append(f"{row.where}: {err}")
    if problems:
        raise DataError(problems[:20], total=len(problems))
    if not out:
        raise WeitiaoError(f"{path}: no rows to generate for")
    return out


def _prompt_row(row, fmt: str | None, columns: dict, system: str | None) -> PromptRow:
    data = row.data
    if isinstance(data.get("prompt"), str) and fmt != "chatglm":
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": data["prompt"]}]
        return PromptRow(row.where, messages, data.get("reference"))
    if isinstance(data.get("messages"), list):
        turns = []
        for i, m in enumerate(data["messages"]):
            if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in (
                    "system", "user", "assistant"):
                raise RowProblem(f"messages[{i}] must be {{'role': system|user|assistant, 'content': text}}")
            turns.append((m["role"], m["content"]))
        reference = None
        if turns and turns[-1][0] == "assistant":
            reference = turns[-1][1]
            turns = turns[:-1]
        if not turns or turns[-1][0] != "user":
            raise RowProblem("the conversation must end with a user turn (or a user turn and its reference answer)")
        if system and turns[0][0] != "system":
            turns = [("system", system)] + turns
        check_turns(turns + [("assistant", "x")])
        return PromptRow(row.where, [{"role": r, "content": c} for r, c in turns], reference)
    if fmt is None:
        raise RowProblem("expected a 'messages' list or a 'prompt' field")
    example = to_example(row, fmt, columns, system)
    if example.text is not None:
        raise RowProblem(f"format {fmt!r} rows have no prompt to answer")
    messages = example.as_messages()
    return PromptRow(row.where, messages[:-1], messages[-1]["content"])


def done_rows(out: Path) -> int:
    """Complete lines already in `out`; a trailing partial line (killed mid-write) is cut off."""
    if not out.is_file():
        return 0
    data = out.read_bytes()
    keep = data[: data.rfind(b"\n") + 1]
    if len(keep) != len(data):
        with open(out, "r+b") as f:
            f.truncate(len(keep))
    return keep.count(b"\n")


def run(loaded, input_path: str, out_path: str, gen: GenerationConfig, overwrite: bool = False,
        log=print) -> int:
    from tqdm.auto import tqdm

    from weitiao.evaluation.generate import generate

    cfg = loaded.config
    rows = read_prompts(input_path, cfg.data.format if cfg else None, cfg.data.columns if cfg else None,
                        cfg.data.system if cfg else None)
    out = Path(out_path)
    if out.exists() and overwrite:
        out.unlink()
    done = done_rows(out)
    if done:
        first = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
        if first.get("where") != rows[0].where or done > len(rows):
            raise WeitiaoError(f"--out: {out} holds answers for another input ({first.get('where')!r}); pass "
                               "--overwrite to replace it or choose another --out")
        log(f"{out}: {done} of {len(rows)} rows already answered; continuing")
    out.parent.mkdir(parents=True, exist_ok=True)
    prompts = [loaded.template.render(loaded.tokenizer, r.messages, add_generation_prompt=True) for r in rows]
    bar = tqdm(total=len(rows), initial=done, unit="row", desc="generate")
    with open(out, "a", encoding="utf-8") as f:
        for start in range(done, len(rows), gen.batch_size):
            end = min(start + gen.batch_size, len(rows))
            answers = generate(loaded.model, loaded.tokenizer, prompts[start:end], gen, loaded.template.stop_ids,
                               loaded.amp_dtype)
            for i, answer in zip(range(start, end), answers):
                record = {"index": i, "where": rows[i].where, "messages": rows[i].messages, "output": answer}
                if rows[i].reference is not None:
                    record["reference"] = rows[i].reference
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
            bar.update(end - start)
    bar.close()
    log(f"wrote {len(rows)} answers to {out}")
    return len(rows)
