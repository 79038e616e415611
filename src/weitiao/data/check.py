"""Data checks beyond "can this row be read": duplicates, train/val/test leakage, token lengths, and a preview.

Near-duplicates use MinHash (Broder 1997) over character shingles of the normalised row text, with datasketch's
LSH index to find candidate pairs; a pair is reported when its estimated Jaccard similarity is at least
`threshold`. Shingles are 5 characters in a language written with spaces, and 2 in Chinese or Japanese text,
where one character carries about as much as an English word: a 2-character edit of a 20-character Chinese question
changes a third of its 5-character shingles but a sixth of its bigrams.
"""
from __future__ import annotations

import re
import statistics
import unicodedata
from dataclasses import dataclass, field

from weitiao.data.encode import IGNORE_INDEX, Encoded
from weitiao.data.formats import Example

SHINGLE = 5
SHINGLE_CJK = 2
NUM_PERM = 128
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def normalized_text(ex: Example) -> str:
    """Row text for comparison: NFKC, lower case, punctuation dropped, whitespace collapsed."""
    text = ex.text if ex.text is not None else "\n".join(content for _, content in ex.messages)
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch if not unicodedata.category(ch).startswith("P") else " " for ch in text)
    return re.sub(r"\s+", " ", text).strip()


def _minhash(text: str):
    from datasketch import MinHash

    m = MinHash(num_perm=NUM_PERM, seed=1)
    size = SHINGLE_CJK if len(CJK.findall(text)) * 3 >= len(text.replace(" ", "")) else SHINGLE
    shingles = {text[i: i + size] for i in range(max(1, len(text) - size + 1))}
    m.update_batch([s.encode("utf-8") for s in shingles])
    return m


@dataclass
class Pair:
    a: str  # where (row location) of the first row
    b: str  # where of the second row
    similarity: float  # 1.0 for exact (normalised) matches

    def as_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "similarity": round(self.similarity, 3)}


@dataclass
class Overlaps:
    exact: list[Pair] = field(default_factory=list)
    near: list[Pair] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"exact": [p.as_dict() for p in self.exact], "near": [p.as_dict() for p in self.near]}


def find_overlaps(rows: list[Example], others: list[Example] | None, threshold: float) -> Overlaps:
    """Pairs inside `rows` (others=None: duplicates), or between `rows` and `others` (leakage).

    Each pair is (row in `rows`, later row or row in `others`). Exact means equal after normalisation.
    """
    from datasketch import MinHashLSH

    out = Overlaps()
    texts = [normalized_text(ex) for ex in rows]
    hashes = [_minhash(t) for t in texts]
    # LSH finds candidates with some probability near its threshold; a lower one misses fewer pairs just above
    # `threshold` (a 0.84 pair was missed at 0.8), and each candidate's estimate is still compared with `threshold`
    lsh = MinHashLSH(threshold=max(0.3, threshold - 0.2), num_perm=NUM_PERM)
    first_of: dict[str, int] = {}

    def near(h, where: str, text: str) -> list[Pair]:
        """Indexed rows whose similarity to `h` reaches the threshold, other than exact copies of `text`."""
        pairs = []
        for j in sorted(int(k) for k in lsh.query(h)):
            sim = hashes[j].jaccard(h)
            if sim >= threshold and texts[j] != text:
                pairs.append(Pair(rows[j].where, where, sim))
        return pairs

    for i, (t, h) in enumerate(zip(texts, hashes)):
        if t in first_of:
            if others is None:
                out.exact.append(Pair(rows[first_of[t]].where, rows[i].where, 1.0))
            continue  # an exact copy is indexed once
        if others is None:
            out.near.extend(near(h, rows[i].where, t))
        first_of[t] = i
        lsh.insert(str(i), h)
    if others:
        copies: dict[str, list[int]] = {}
        for i, t in enumerate(texts):
            copies.setdefault(t, []).append(i)
        for ex in others:  # every training row that leaks into this row, exact or near
            t = normalized_text(ex)
            out.exact.extend(Pair(rows[i].where, ex.where, 1.0) for i in copies.get(t, []))
            out.near.extend(near(_minhash(t), ex.where, t))
    return out


def length_stats(encoded: list[Encoded], lengths_before_truncation: list[int], max_length: int) -> dict:
    if not lengths_before_truncation:
        return {}
    xs = sorted(lengths_before_truncation)
    q = lambda f: xs[min(len(xs) - 1, int(f * len(xs)))]  # noqa: E731
    return {"rows": len(xs), "min": xs[0], "median": int(statistics.median(xs)), "p95": q(0.95), "max": xs[-1],
            "over_max_length": sum(1 for x in xs if x > max_length), "max_length": max_length,
            "trained_tokens": sum(sum(1 for t in e.labels if t != IGNORE_INDEX) for e in encoded)}


def render_preview(encoded: Encoded, tokenizer, open_mark: str = "⟦", close_mark: str = "⟧") -> str:
    """The row's text with the trained (loss-bearing) spans wrapped in ⟦ ⟧."""
    out, run, trained = [], [], None
    for tok, lab in zip(encoded.input_ids, encoded.labels):
        is_trained = lab != IGNORE_INDEX
        if trained is not None and is_trained != trained:
            text = tokenizer.decode(run)
            out.append(f"{open_mark}{text}{close_mark}" if trained else text)
            run = []
        run.append(tok)
        trained = is_trained
    if run:
        text = tokenizer.decode(run)
        out.append(f"{open_mark}{text}{close_mark}" if trained else text)
    return "".join(out)
