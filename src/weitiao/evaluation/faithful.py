"""Whether a reworded question still asks the same thing: the check every rephrasing passes before it is used.

Precision comes first. A faithful rewording that is rejected costs coverage (fewer questions measured); an
unfaithful one that is accepted makes the reported gap false, because the model is then scored against an answer
to another question. So a candidate is accepted only when it keeps, in English or Chinese:

- every **number** (as digits, English words or Chinese numerals: 5 = five = 五, 35 = 三十五, 2 = 两) and adds none;
- every **name** (English: capitalised words inside a sentence; Chinese: jieba's person, place and organisation
  tags) and adds none;
- every **quoted term or code-like key** ("yes", `user_id`, getJob, 「是」) and adds none;
- every **item of an enumeration** (the fields of "name, age, city and job", the labels of "positive or
  negative", 姓名、年龄、城市和职业) and adds none;
- the **output format and language** (JSON, CSV, a table, English, 中文 ...), neither dropped nor added;
- the **task**: a candidate that summarises where the question translates, or classifies where it lists, is
  another question;
- a **negation** on both sides or on neither;
- the **topic**: every content word of the question (English: a word that is neither an instruction word nor
  filler; Chinese: a noun by jieba's tags), and no more than two new ones;

plus the checks of form (one line, not the question itself, not a repeat, a length within 0.4x-3x).

Why rules and not only an embedding model: the bundled all-MiniLM-L6-v2 scores "List 5 fruits." and "List 5
vegetables." as close as most faithful rewordings, and reads Chinese poorly; what separates the two is what the
rules check. The rates on planted English and Chinese sets are in docs/guides/rephrasing.md (bench/rephrase_checks.py).

Chinese text is segmented with jieba (already used for ROUGE), with its part-of-speech tags for names and nouns.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import re
import unicodedata

from weitiao.evaluation.numerals import TENS, WORDS, as_digits, zh_number, zh_words  # noqa: F401

NUMBER = re.compile(r"\d+(?:\.\d+)?")
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
ZH_NUMERAL = re.compile(r"第?[零〇一二两三四五六七八九十百千万亿]+(?:点[零〇一二三四五六七八九]+)?")
# jieba tags these "m" (numeral) although they count nothing: "一些" is "some", "一起" is "together"
ZH_NOT_NUMBERS = set("一些 一起 一样 一般 一直 一下 一切 一旦 一边 一致 一同 一定 一番 一再 一向 一律 一点 一会 一下子 "
                     "一共 一一 一面 一方面 万一 一时 一生 一部分 一些些 一点点 一口气 "
                     "千克 千米 千瓦 千卡 千帕 千焦 千兆 百米".split())  # units: 千克 is kilogram, not 1000


def numbers_in(text: str) -> set[str]:
    """The numbers a text states, as digits: written as digits, English words up to ninety-nine, or Chinese
    numerals (a numeral inside a name such as 张三, or in 一些 "some", is not a number)."""
    text = unicodedata.normalize("NFKC", text)  # full-width digits and commas become ASCII ones
    # a comma between digits groups thousands only before exactly three digits: "1,000" is 1000, "56,13" two numbers
    found = set(NUMBER.findall(re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)))
    low = text.lower()
    if re.search(r"\ba single\b", low):
        found.add("1")
    for m in re.finditer(r"\b(\d+|" + "|".join(WORDS[1:]) + r") and a half\b", low):
        whole = int(m.group(1)) if m.group(1).isdigit() else WORDS.index(m.group(1))
        found.add(f"{whole}.5")
        low = low.replace(m.group(0), " ")
    for m in re.finditer(r"\b(a|one|two|three|four|five|six|seven|eight|nine|ten) (hundred|thousand)\b", low):
        found.add(str((1 if m.group(1) in ("a", "one") else WORDS.index(m.group(1))) *
                      (100 if m.group(2) == "hundred" else 1000)))
        low = low.replace(m.group(0), " ")
    text = low
    for m in re.finditer(r"\b(" + "|".join(list(TENS) + WORDS) + r")(?:-(" + "|".join(WORDS[1:10]) + r"))?\b",
                         text.lower()):
        value = TENS.get(m.group(1), WORDS.index(m.group(1)) if m.group(1) in WORDS else 0)
        found.add(str(value + (WORDS.index(m.group(2)) if m.group(2) else 0)))
    if CJK.search(text):
        found |= zh_numbers(text)
    return found


def zh_numbers(text: str) -> set[str]:
    """Chinese numerals, except inside a name (张三), in a word that counts nothing (一些 "some"), and the 一 of
    一个 "a" (which English writes without a number either). "一个半" is 1.5."""
    found = set()
    # a decimal (三点五) first, on the whole text: jieba may cut it as 三点 ("three o'clock") + 五
    for m in re.finditer(r"[零〇一二两三四五六七八九十百千万]+点[零〇一二三四五六七八九]+", text):
        found.add(as_digits(zh_number(m.group(0))))
        text = text[:m.start()] + " " * len(m.group(0)) + text[m.end():]
    for word, flag, start in tagged(text):
        if flag in ZH_FLAGS_NAME or flag in ("nz", "nrt", "nrfg") or word in ZH_NOT_NUMBERS:
            continue
        for m in ZH_NUMERAL.finditer(word):
            numeral, after = m.group(0).lstrip("第"), word[m.end():m.end() + 2] or text[start + m.end():][:2]
            if not numeral or set(numeral) <= {"点"} or (numeral == "一" and after[:1] not in ZH_STRONG and
                                                         not m.group(0).startswith("第") and after != "个半"):
                continue
            try:
                value = zh_number(numeral) + (0.5 if after == "个半" else 0)
            except (KeyError, ValueError):
                continue
            found.add(as_digits(value))
    return found


def says_a_one(text: str) -> bool:
    """Whether a Chinese text has 一 before a measure word that `zh_numbers` does not count (一个, 一种)."""
    return has_cjk(text) and bool(re.search(r"(?<![第\d零〇一二两三四五六七八九十百千万])一(?=[^" +
                                             "".join(ZH_STRONG) + r"\W\d零〇一二两三四五六七八九十百千万点])", text))


ZH_STRONG = set("句段步行字点项")  # 一句话, 一段, 一步: a length asked for; 一个, 一条, 一首诗 ...: "a"


# ---------------------------------------------------------------- segmentation


@functools.lru_cache(maxsize=4096)
def tagged(text: str) -> tuple[tuple[str, str, int], ...]:
    """jieba's words of `text` with their part-of-speech tags and start offsets."""
    import jieba
    import jieba.posseg

    jieba.setLogLevel(logging.WARNING)  # jieba logs its dictionary loading on first use
    out, at = [], 0
    for pair in jieba.posseg.cut(text):
        out.append((pair.word, pair.flag, at))
        at += len(pair.word)
    return tuple(out)


def normalise(text: str) -> str:
    """NFKC, lower case, accents dropped, punctuation as spaces, spaces collapsed."""
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text))
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def stem(word: str) -> str:
    """A crude English stem, enough to match "fruits" with "fruit", "landed" with "land" and "summary" with
    "summarize": the word without a possessive or a plural, past or -ing ending, cut to its first five letters."""
    word = word.lower().removesuffix("'s").removesuffix("’s")
    for suffix, by in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            word = word[:-len(suffix)] + by
            break
    return word[:5]


def same_stem(a: str, b: str) -> bool:
    """Two stems of one word: equal, or one the start of the other ("liv" of living, "live" of lives)."""
    return a == b or (min(len(a), len(b)) >= 3 and (a.startswith(b) or b.startswith(a)))


# English words of one meaning that a rewording may swap (stems): kept small and general
EN_SYNONYMS = [{"live", "resid", "home"}, {"speed", "fast", "veloc"}, {"write", "wrote", "autho"},
               {"pictu", "image", "photo"}, {"film", "movie"}, {"begin", "start"}, {"end", "finis"},
               {"large", "big"}, {"small", "littl"}, {"buy", "purch"}, {"shop", "store"}, {"car", "vehic"}]


def english_words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z][A-Za-z'-]*", unicodedata.normalize("NFKC", text))


# words that say how to answer rather than what about: a rewording may drop or change them freely
INSTRUCTION_WORDS = set("""
many much number single every sound sounds seem seems half nothing anything everything
a about above after again all also am an and answer answers any are as ask asked at be below between both but by
can could describe did do does each either else few for from get give given go had has have help here how i if in
into is it its just kindly let like list lists listing make me mention my name names need needs no nor not now
numbered of off on one only or other our out over please provide reply respond return say see should show so some
state such tell than thank thanks that the their them then there these they this those to too under up us use very
want was we were what when where which while who whom why will with would write yes you your exactly following
whose whether decide determine find identify pick choose select put turn fill read create build convert output
produce generate come up bring pull extract enumerate offer share supply form into named called just simply kind
kinds type types sort sorts way words word using used ones one's thing things something mind
""".split())
# words for the data the instruction applies to, or the answer's shape, which a rewording may name differently
FILLER_WORDS = set("""
text texts paragraph paragraphs passage passages input content contents description described describes below
above following given provided sentence sentences here document item items object objects key keys field fields
format formatted value values entry entries response result results data information info details detail piece
version form person's person people someone individual somebody order tone style manner
""".split())
NEGATIONS_EN = {"not", "no", "never", "don't", "doesn't", "didn't", "isn't", "aren't", "won't", "can't", "cannot",
                "without", "none", "nor", "avoid", "exclude", "excluding", "except", "unable"}
NEGATIONS_ZH = ("不", "别", "勿", "没有", "无需", "不要", "不用", "禁止", "除了", "除外")
ZH_FLAGS_CONTENT = {"n", "nr", "ns", "nt", "nz", "nrt", "nrfg", "vn", "j", "an", "ng", "s", "t", "a", "ad"}
ZH_FLAGS_NAME = {"nr", "ns", "nt", "nrt", "nrfg"}
ZH_FILLER = set("""
全部 所有 每个 成 为 下面 以下 下文 上述 段落 这段话 段话 文本 内容 文字 句子 信息 问题 格式 方式 结果 答案 回答 输出 输入 条 一下 东西
部分 这条 这个 那个 字段 键 对象 下列 如下 原文 片段 材料 情况 要求 时候 请问 麻烦 帮忙 形式 里面 顺序 排列
列表 编号 序号 正好 恰好 例子 清单 名单 分别
""".split())
# Chinese words that only ask: may be dropped or changed freely
ZH_SYNONYMS = [{"姓名", "名字", "名称"}, {"职业", "工作"}, {"年龄", "岁数"}, {"居住", "住"}, {"评论", "评价"},
               {"城市", "城"}, {"今年", "现在", "目前", "如今"}, {"作者", "谁写", "写的"}, {"月球", "登月"}]


# the output's form and language: a rewording keeps them and adds none
FORMATS = {
    "json": ("json",), "yaml": ("yaml", "yml"), "csv": ("csv", "comma separated", "comma-separated"),
    "xml": ("xml",), "html": ("html",), "markdown": ("markdown",), "table": ("table", "表格"), "sql": ("sql",),
    "python": ("python",), "bullet": ("bullet", "bulleted", "要点"),
    "english": ("english", "英文", "英语"), "chinese": ("chinese", "中文", "汉语", "简体"),
    "french": ("french", "法语", "法文"), "german": ("german", "德语", "德文"),
    "japanese": ("japanese", "日语", "日文"), "korean": ("korean", "韩语", "韩文"),
    "spanish": ("spanish", "西班牙语", "西班牙文"), "russian": ("russian", "俄语", "俄文"),
    "italian": ("italian", "意大利语"), "portuguese": ("portuguese", "葡萄牙语"),
    # an order asked for is part of the answer's form
    "ascending": ("ascending", "increasing order", "smallest to largest", "lowest to highest", "least to most",
                  "从小到大", "由小到大", "升序", "从低到高", "由低到高"),
    "descending": ("descending", "decreasing order", "largest to smallest", "highest to lowest", "most to least",
                   "从大到小", "由大到小", "降序", "从高到低", "由高到低"),
}
# tasks that are different questions: a rewording may drop the task verb, but not bring in another task's
TASKS = {
    "summarise": ("summar", "sum up", "condense", "tl;dr", "概括", "总结", "摘要", "归纳"),
    "translate": ("translat", "翻译", "译成", "译为", "译作"),
    "classify": ("classif", "categori", "分类", "归类", "判断", "label"),
    "rewrite": ("rewrite", "rephrase", "paraphrase", "reword", "改写", "润色", "重写", "改述", "改成"),
    "correct": ("correct", "proofread", "fix the grammar", "纠正", "改正", "纠错", "修改错误"),
    # arithmetic: 12 times 7 and 12 plus 7 are two questions
    "multiply": ("times", "multipl", "product of", "乘", "乘以"),
    "add": ("plus", "added to", "sum of", "加", "加上"),
    "subtract": ("minus", "subtract", "减", "减去"),
    "divide": ("divided", "divide", "除以"),
}


def has_cjk(text: str) -> bool:
    return bool(CJK.search(text))


def present(term: str, text: str) -> bool:
    """Whether `text` states `term`: Chinese as a substring (spaces ignored), anything else as whole words after
    `normalise`."""
    if has_cjk(term):
        return normalise(term).replace(" ", "") in normalise(text).replace(" ", "")
    words = normalise(term)
    return bool(words) and f" {words} " in f" {normalise(text)} "


def present_zh(word: str, text: str) -> bool:
    """A Chinese word kept: as a substring, every one of its characters, or a listed synonym."""
    flat = normalise(text).replace(" ", "")
    if word in flat or all(ch in flat for ch in word):
        return True
    return any(word in group and any(s in flat for s in group) for group in ZH_SYNONYMS)


# ---------------------------------------------------------------- what a question asks for

QUOTED = re.compile(r'"([^"\n]+)"|“([^”\n]+)”|‘([^’\n]+)’|「([^」\n]+)」|『([^』\n]+)』|`([^`\n]+)`'
                    r"|(?<![\w])'([^'\n]+)'(?![\w])")
CODE = re.compile(r"\b[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+\b|\b[a-z]+[A-Z][A-Za-z0-9]*\b")
SENTENCE_START = re.compile(r"(^|[.!?:;\"“\n]\s*)$")
ZH_SEPARATORS = {"、", "，", ",", "和", "与", "及", "以及", "或", "或者", "还是", "跟"}
ZH_ITEM_FLAGS = {"n", "nr", "ns", "nt", "nz", "nrt", "nrfg", "vn", "j", "an", "a", "ad", "eng", "ng", "s"}


@dataclasses.dataclass
class Asks:
    """What a question asks for, as the checks compare it."""
    numbers: set[str]
    names: list[str]
    terms: list[str]  # quoted terms and code-like keys, normalised
    items: list[str]  # items of enumerations: fields, labels
    formats: set[str]
    tasks: set[str]
    negated: bool
    content: list[str]  # English stems or Chinese words of the topic
    content_order: list[str]  # the text's words in order, as `content` writes its topic words (others: "")


@functools.lru_cache(maxsize=4096)  # a question is compared with each of its candidates: analysed once
def asks(text: str) -> Asks:
    names = names_in(text)
    content = content_in(text, names)
    return Asks(numbers_in(text), names, terms_in(text), items_in(text), families(text, FORMATS),
                families(text, TASKS), negated(text), content, content_order(text, set(content)))


def terms_in(text: str) -> list[str]:
    found = [next(g for g in m.groups() if g) for m in QUOTED.finditer(text)] + CODE.findall(text)
    return list(dict.fromkeys(normalise(t) for t in found if normalise(t)))


def names_in(text: str) -> list[str]:
    """English: runs of capitalised words that do not merely start a sentence (a run of two or more may);
    Chinese: jieba's person, place and organisation words."""
    names = []
    ascii_part = CJK.sub(" ", text)
    for m in re.finditer(r"[A-Z][\w’'-]*(?:\s+[A-Z][\w’'-]*)*", ascii_part):
        words = m.group(0).split()
        if SENTENCE_START.search(ascii_part[:m.start()]) and len(words) == 1:
            continue
        name = normalise(re.sub(r"['’]s$", "", m.group(0)))
        if name and name != "i" and not families(name, FORMATS) and name not in INSTRUCTION_WORDS:
            names.append(name)
    if has_cjk(text):  # jieba sometimes glues a measure word on ("种颜色" tagged a name): it is taken off
        found = [w.lstrip(ZH_MEASURE) for w, flag, _ in tagged(text) if flag in ZH_FLAGS_NAME and has_cjk(w)]
        names += [w for w in found if len(w) >= 2]
    return list(dict.fromkeys(names))


ZH_MEASURE = "种个只条位名件本首篇"


def families(text: str, table: dict[str, tuple[str, ...]]) -> set[str]:
    low = unicodedata.normalize("NFKC", text).lower()
    words = {w for w, _, _ in tagged(low)} if has_cjk(low) else set()
    found = set()
    for family, spellings in table.items():
        for s in spellings:
            if not has_cjk(s):
                hit = re.search(r"(?<![a-z])" + re.escape(s), low)
            else:
                hit = s in words if len(s) == 1 else s in low
            if hit:
                found.add(family)
    return found


def negated(text: str) -> bool:
    if any(w.lower() in NEGATIONS_EN or w.lower().endswith("n't") for w in english_words(text)):
        return True
    return has_cjk(text) and any(w in NEGATIONS_ZH for w, _, _ in tagged(text))


def items_in(text: str) -> list[str]:
    return list(dict.fromkeys(english_items(text) + (chinese_items(text) if has_cjk(text) else [])))


def english_items(text: str) -> list[str]:
    """The single-word items of English enumerations: "name, age, city and job" (three or more), or two words
    joined by "and"/"or" that are neither instruction nor filler words ("positive or negative")."""
    items = []
    for clause in re.split(r"[.;:?!()\n]", CJK.sub(" ", text)):
        tokens = re.findall(r"[\w'’-]+|,", clause.lower())
        for j, tok in enumerate(tokens):
            if tok not in ("and", "or") or j == 0 or j + 1 >= len(tokens):
                continue
            chain, k = [tokens[j + 1]], j - 1
            if tokens[k] == ",":
                k -= 1
            while k >= 0 and tokens[k] != ",":
                chain.insert(0, tokens[k])
                if k == 0 or tokens[k - 1] != ",":
                    break
                k -= 2
            chain = [w for w in chain if w != ","]
            plain = all(w not in INSTRUCTION_WORDS | FILLER_WORDS | NEGATIONS_EN and w.isalpha()
                        and not families(w, FORMATS) for w in chain)
            if len(chain) >= 3 or (len(chain) == 2 and plain):
                items += [w.removesuffix("'s") for w in chain if w not in ("the", "a", "an")]
    return items


def chinese_items(text: str) -> list[str]:
    """Items of Chinese enumerations: short words joined by 、，和 或 还是 ... ("姓名、年龄、城市和职业",
    "正面还是负面"), at least two, with a 、 or an 或/还是 among the joins, or three or more."""
    words = [(w, f) for w, f, _ in tagged(text) if w.strip() and f != "uj"]  # "负面的还是正面的": 的 skipped
    items, chain, joins = [], [], []

    def close():
        if len(chain) >= 3 or (len(chain) == 2 and set(joins) & {"、", "或", "或者", "还是"}):
            items.extend(chain)

    for w, f in words:
        if w in ZH_SEPARATORS and chain and len(joins) < len(chain):
            joins.append(w)
        elif f in ZH_ITEM_FLAGS and len(w) <= 6 and w not in ZH_FILLER and (not chain or len(joins) == len(chain)):
            chain.append(w)
        else:
            close()
            chain, joins = ([w], []) if f in ZH_ITEM_FLAGS and len(w) <= 6 and w not in ZH_FILLER else ([], [])
    close()
    return items


def inflected_instruction(word: str) -> bool:
    """"replying", "returned": an instruction or filler word with an ending ("formal" is not "form")."""
    return any(word.startswith(w) and len(word) - len(w) <= 3 and word[len(w):] in ("s", "es", "ed", "d", "ing")
               for w in INSTRUCTION_WORDS | FILLER_WORDS if len(w) >= 4)


DIRECTION_ZH = ("换算成", "转换成", "转换为", "换成", "转成", "等于多少", "是多少", "到")


def directions(text: str) -> set[tuple[str, str]]:
    """(from, to) pairs of "A to B", "A into B", "A换算成B", "A等于多少B": swapped, they ask the reverse."""
    words = english_words(CJK.sub(" ", text))
    pairs = {(stem(a), stem(b)) for a, m, b in zip(words, words[1:], words[2:]) if m.lower() in ("to", "into")}
    if has_cjk(text):
        for m in re.finditer("|".join(DIRECTION_ZH), text):
            before = [w for w, _, _ in tagged(text[:m.start()]) if has_cjk(w)]
            after = [w for w, _, _ in tagged(text[m.end():]) if has_cjk(w)]
            if before and after:
                pairs.add((before[-1], after[0]))
    return pairs


def content_in(text: str, names_found: list[str]) -> list[str]:
    """The topic: English stems of words that are no instruction, filler, number, format or task word;
    Chinese nouns (by jieba's tags) that are no filler; none of them one of `names_found` (`names_in`)."""
    skip = INSTRUCTION_WORDS | FILLER_WORDS | NEGATIONS_EN | set(WORDS) | set(TENS)
    names = " ".join(names_found)
    text = without_families(text)
    out = [stem(w) for w in english_words(CJK.sub(" ", text)) if len(w) >= 3 and w.lower() not in skip
           and w.lower().removesuffix("'s") not in skip and not inflected_instruction(w.lower())
           and not numbers_in(w) and not families(w, FORMATS) and not families(w, TASKS)
           and f" {w.lower()} " not in f" {names} "]
    if has_cjk(text):
        # a numeral jieba glued on (七天) is checked as a number, not as the topic: 七天 and 7天 ask the same
        words = [re.sub(r"^[零〇一二两三四五六七八九十百千万亿]+(?=.)", "", w) for w, f, _ in tagged(text)
                 if f in ZH_FLAGS_CONTENT]
        words = [w.lstrip(ZH_MEASURE) if len(w) > 2 else w for w in words]
        out += [w for w in words if has_cjk(w) and w not in ZH_FILLER and w not in names
                and not families(w, FORMATS) and not families(w, TASKS)]
    return list(dict.fromkeys(out))


def item_kept(item: str, text: str, stems: set[str]) -> bool:
    """An enumerated field or label kept as it is written (no synonyms: a key renamed is another key)."""
    if has_cjk(item):
        return item in normalise(text).replace(" ", "")
    return present(item, text) or any(same_stem(stem(item), s) for s in stems)


def name_kept(name: str, text: str, stems: set[str]) -> bool:
    """A name stated: Chinese as a substring, English word by word as a stem ("Europe" in "European rivers")."""
    if has_cjk(name):  # every character: jieba may cut a name with the next one (张三住)
        return all(ch in normalise(text).replace(" ", "") for ch in name)
    return present(name, text) or all(any(same_stem(stem(w), s) for s in stems) and len(w) >= 4
                                      for w in name.split())


def content_order(text: str, topic: set[str]) -> list[str]:
    """Every word of the text in order, as a topic word (of `content_in`) or "" ("tropical fruits" -> ["tropi",
    "fruit"]; "热带水果" -> ["热带", "水果"]), to find a new word put right before a topic word."""
    if has_cjk(text):
        return [w if w in topic else "" for w, f, _ in tagged(text) if w.strip() and f != "x"]
    return [stem(w) if stem(w) in topic else "" for w in english_words(text)]


def without_families(text: str) -> str:
    """The text with the spellings of formats, orders and tasks blanked: they are checked on their own."""
    for spellings in list(FORMATS.values()) + list(TASKS.values()):
        for sp in spellings:
            if has_cjk(sp):
                text = text.replace(sp, " ") if len(sp) > 1 else text
            else:  # the whole word a spelling starts: "summar" takes "Summarize"
                text = re.sub(r"(?<![A-Za-z])" + re.escape(sp) + r"[A-Za-z]*", " ", text, flags=re.I)
    return text


def content_kept(word: str, text: str, stems: set[str]) -> bool:
    """A topic word kept: Chinese by `present_zh`, English as a stem of the text or of a listed synonym."""
    if has_cjk(word):
        return present_zh(word, text)
    if any(same_stem(word, s) for s in stems):
        return True
    return any(word in group and any(same_stem(g, s) for g in group for s in stems) for group in EN_SYNONYMS)


def english_stems(text: str) -> set[str]:
    return {stem(w) for w in english_words(CJK.sub(" ", text))}


# at most this many topic words a rewording may bring in ("located", "European"); more is another question
MAX_NEW_TOPIC_WORDS = 2


# characters of markup and code, not of a sentence: '/person/name/age => /JSON' or '{Name,Age} {Name,Age}' is not
# a question a user would ask, whatever fields it keeps (`_` is left out: keys such as user_id are written with it)
MARKUP = re.compile(r"[{}\[\]<>/\\|=+*#@$%^&~`]")


def garbled(c: str) -> str | None:
    """Why a candidate is not a sentence (mostly markup, or a word or phrase said twice in a row), or None."""
    if len(MARKUP.findall(c)) > 0.08 * len(c):
        return "garbled: mostly markup"
    words = [w.lower() for w in re.findall(r"\w+", c)]
    if any(a == b and not a.isdigit() for a, b in zip(words, words[1:])):
        return "garbled: a word said twice in a row"
    grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    if len(grams) != len(set(grams)):
        return "garbled: a phrase said twice"
    return None


def form_problems(question: str, c: str, taken, seen) -> list[str]:
    found = []
    if "\n" in c:
        found.append("more than one line")
    why = garbled(c) if not garbled(question) else None  # a question in markup may be reworded in markup
    if why:
        found.append(why)
    if normalise(c) == normalise(question):
        found.append("the question itself")
    if any(normalise(c) == normalise(t) for t in taken):
        found.append("a repeat")
    if normalise(c) in seen:
        found.append("seen in training")
    if not 0.4 * len(question) <= len(c) <= 3 * len(question) + 20:
        found.append(f"length: {len(c)} characters against {len(question)}")
    return found


def kept_and_added(kind: str, noun: str, ours: list | set, theirs: list | set, ours_in_theirs, theirs_in_ours):
    """"loses a NOUN: x" for what the question has and the candidate does not state, "adds a NOUN: y" for the
    reverse."""
    lost = [x for x in ours if not ours_in_theirs(x)]
    added = [x for x in theirs if not theirs_in_ours(x)]
    out = [f"{kind[0]} {noun}: {', '.join(sorted(map(str, lost)))}"] if lost else []
    return out + ([f"{kind[1]} {noun}: {', '.join(sorted(map(str, added)))}"] if added else [])


def meaning_problems(question: str, c: str) -> list[str]:
    """Everything the question asks for that the candidate loses, changes or adds (the module docstring)."""
    q, a = asks(question), asks(c)
    q_stems, c_stems = english_stems(question), english_stems(c)
    # "一种"/"一个" ("a", not counted) stands for a 1 the other side states
    q_numbers, a_numbers = q.numbers | ({"1"} if says_a_one(question) else set()), \
        a.numbers | ({"1"} if says_a_one(c) else set())
    found = kept_and_added(("loses", "adds"), "a number", q.numbers, a.numbers, a_numbers.__contains__,
                           q_numbers.__contains__)
    found += kept_and_added(("loses", "adds"), "a name", q.names, a.names, lambda n: name_kept(n, c, c_stems),
                            lambda n: name_kept(n, question, q_stems))
    found += kept_and_added(("loses", "adds"), "a term", q.terms, a.terms, lambda t: present(t, c),
                            lambda t: present(t, question))
    found += kept_and_added(("drops", "adds"), "a field", q.items, a.items,
                            lambda i: item_kept(i, c, c_stems), lambda i: item_kept(i, question, q_stems))
    if q.formats != a.formats:
        found.append(f"changes the format: {', '.join(sorted(q.formats)) or 'none'} -> "
                     f"{', '.join(sorted(a.formats)) or 'none'}")
    if a.tasks - q.tasks - ({"classify"} if q.items else set()):  # "spam or ham?" is a classification
        found.append(f"changes the task: {', '.join(sorted(q.tasks)) or 'none'} -> {', '.join(sorted(a.tasks))}")
    if {(b, a_) for a_, b in directions(question)} & directions(c):
        found.append("reverses a direction")
    if q.negated != a.negated:
        found.append("changes a negation")
    lost = [w for w in q.content if not content_kept(w, c, c_stems)]
    if lost:
        found.append(f"drops the topic: {', '.join(lost)}")
    new = [w for w in a.content if not content_kept(w, question, q_stems) and w not in a.names]
    if len(new) > MAX_NEW_TOPIC_WORDS:
        found.append(f"adds to the question: {', '.join(new)}")
    narrowed = [f"{x} {y}" for x, y in zip(a.content_order, a.content_order[1:]) if x in new and y in q.content]
    if narrowed:
        found.append(f"narrows the topic: {', '.join(narrowed)}")
    return found


def problems(question: str, candidate: str, taken: list[str], keep: tuple | list = (),
             seen: frozenset | set = frozenset()) -> list[str]:
    """Why `candidate` is not a usable rephrasing of `question` (empty: it is). `keep`: answer values the
    question states, which the candidate must state too; `seen`: normalised texts it must not be (evaluation:
    the training questions)."""
    c = candidate.strip()
    if not c:
        return ["empty"]
    found = form_problems(question, c, taken, seen) + meaning_problems(question, c)
    lost = [v for v in keep if not states(c, v)]
    if lost:
        found.append(f"loses an answer value: {', '.join(map(repr, lost))}")
    return found


def problem_kind(problem: str) -> str:
    """The kind of a `problems` entry, for counting: the part before its first colon."""
    return problem.split(":", 1)[0]


# ---------------------------------------------------------------- faithfulness: the answer's values

# words that start sentences or answers and name nothing: never an answer value of a free-text answer
NOT_NAMES = {"the", "a", "an", "i", "it", "this", "that", "these", "those", "yes", "no", "sure", "here", "there",
             "he", "she", "they", "we", "you", "his", "her", "their", "our", "my", "in", "on", "at", "and", "or"}


def answer_values(answer: str) -> list[str]:
    """What a reference answer asserts, as texts: a JSON answer's strings and numbers (nested ones too), a
    numbered list's items, or else a free answer's numbers and names (runs of capitalised words; in Chinese,
    jieba's names, and the whole answer when it is short)."""
    import json

    from weitiao.evaluation.metrics import parse_numbered_list

    body = answer.strip()
    fence = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", body, flags=re.S)
    try:
        return json_leaves(json.loads(fence.group(1) if fence else body))
    except ValueError:
        pass
    items = parse_numbered_list(body)
    if items:
        return items
    names = [m.group(0) for m in re.finditer(r"\b[A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)*", body)]
    found = NUMBER.findall(body) + [n for n in names if n.lower() not in NOT_NAMES]
    if has_cjk(body):
        found += sorted(numbers_in(body) - set(found))
        found += [w for w, f, _ in tagged(body) if f in ZH_FLAGS_NAME and len(w) >= 2]
        whole = re.sub(r"[\W_]+$", "", body)
        if len(whole) <= 8 and not NUMBER.search(whole):
            found.append(whole)
    return list(dict.fromkeys(found))


def json_leaves(value) -> list[str]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in json_leaves(v)]
    if isinstance(value, list):
        return [x for v in value for x in json_leaves(v)]
    if isinstance(value, bool) or value is None:
        return []  # true/false/null are not stated in a question's words
    text = str(value).strip()
    return [text] if text else []


def states(text: str, value: str) -> bool:
    """Whether `text` states `value`: a number as digits or words (English or Chinese), anything else as whole
    words after `normalise` (Chinese: as a substring)."""
    if NUMBER.fullmatch(value):
        return as_digits(float(value)) in {as_digits(float(n)) for n in numbers_in(text)}
    return present(value, text)


def values_to_keep(text: str, answers: list[str]) -> list[str]:
    """The answer values (of any of `answers`) that `text` states: a rewording of `text` must state them too."""
    found = []
    for answer in answers:
        found += [v for v in answer_values(answer) if v not in found and states(text, v)]
    return found
