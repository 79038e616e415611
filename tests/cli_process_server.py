"""Imported once, by the fork server of cli_process.py only: what `python -m weitiao` sets and imports before a
command runs, so that each forked CLI call starts from there."""
from weitiao.api import environment

environment()  # before the libraries below read HF_HUB_OFFLINE and friends

import peft  # noqa: E402,F401
import transformers.trainer_utils  # noqa: E402,F401
import transformers.training_args  # noqa: E402,F401
import trl  # noqa: E402,F401

import cli_process  # noqa: E402,F401  (the children's entry point)
import weitiao.cli  # noqa: E402,F401
from weitiao.workflows import classify, dpo, reward, sft  # noqa: E402,F401
