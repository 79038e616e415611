"""Regenerate the config reference block of README.md from the config dataclasses (the one source of docs)."""
from __future__ import annotations

import re
from pathlib import Path

from weitiao.config import config_reference

README = Path(__file__).resolve().parents[1] / "README.md"
text = README.read_text(encoding="utf-8")
block = f"<!-- config-reference:start -->\n{config_reference(markdown=True)}<!-- config-reference:end -->"
new = re.sub(r"<!-- config-reference:start -->.*?<!-- config-reference:end -->", lambda _: block, text, flags=re.S)
README.write_text(new, encoding="utf-8")
print("README.md config reference", "updated" if new != text else "already up to date")
