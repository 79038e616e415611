"""The one helper every config dataclass uses: a field with its help text.

It lives below `config` so that a method module (`methods/lora.py`, ...) can define its own settings dataclass,
which the registry composes into the `method` section (methods.method_config_type), without importing `config`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any


def doc(help: str, default: Any = dataclasses.MISSING, default_factory: Any = dataclasses.MISSING):
    """A dataclass field with its help text (the help is the field's only documentation)."""
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})
