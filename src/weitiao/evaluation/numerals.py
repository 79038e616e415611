"""Numbers written as words, in English and Chinese: what a rephrasing check compares (5 = five = 五) and what a
rule writes ({n:words}, {n:zh}), and the numbers of a Chinese list ("三、熊猫"). No dependencies: the metrics and
the rephrasing checks both read it."""
from __future__ import annotations

WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen twenty").split()
TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
        "ninety": 90}
ZH_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8,
             "九": 9}
ZH_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10_000, "亿": 100_000_000}


def zh_number(text: str) -> float:
    """A Chinese numeral as a number: 三十五 -> 35, 两 -> 2, 一百零五 -> 105, 二〇二四 -> 2024, 一点五 -> 1.5."""
    whole, _, frac = text.partition("点")
    if not any(ch in ZH_UNITS for ch in whole):  # digit by digit: 二〇二四
        value = int("".join(str(ZH_DIGITS[ch]) for ch in whole)) if whole else 0
    else:
        value, section, digit = 0, 0, 0
        for ch in whole:
            if ch in ZH_DIGITS:
                digit = ZH_DIGITS[ch]
            elif ch in ("万", "亿"):
                value += (section + digit) * ZH_UNITS[ch]
                section = digit = 0
            else:  # 十 百 千; a bare 十 at the start is ten
                section += (digit or 1) * ZH_UNITS[ch]
                digit = 0
        value += section + digit
    if frac:
        return float(f"{value}.{''.join(str(ZH_DIGITS[ch]) for ch in frac)}")
    return value


def as_digits(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def zh_words(n: int) -> str:
    """0-99999 as a Chinese numeral, 2 written 两 before a measure word as in 两种 (35 -> 三十五, 2 -> 两)."""
    if n == 2:
        return "两"
    digits = "零一二三四五六七八九"
    if not 0 <= n < 100_000:
        return str(n)
    if n < 10:
        return digits[n]
    out, zero = "", False
    for unit, size in (("万", 10_000), ("千", 1000), ("百", 100), ("十", 10)):
        d, n = divmod(n, size)
        if d:
            out += ("零" if zero and out else "") + digits[d] + unit
            zero = False
        elif out:
            zero = True
    out += ("零" if zero and n else "") + (digits[n] if n else "")
    return out[1:] if out.startswith("一十") else out


def number_words(n: int) -> str:
    """0-99 in English words ("4" -> "four", "42" -> "forty-two"); other numbers as digits."""
    if 0 <= n < len(WORDS):
        return WORDS[n]
    if 20 < n < 100:
        tens = next(w for w, v in TENS.items() if v == n - n % 10)
        return tens if n % 10 == 0 else f"{tens}-{WORDS[n % 10]}"
    return str(n)
