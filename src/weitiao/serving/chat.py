"""`weitiao chat`: a multi-turn conversation in the terminal, streamed token by token.

Commands typed at the prompt: `/reset` forgets the conversation (keeps the system prompt), `/system TEXT` sets a
new system prompt and resets, `/exit` (or Ctrl-D) leaves.
"""
from __future__ import annotations

import sys

from weitiao.serving.engine import Engine, Sampling

HELP = "/reset: new conversation   /system TEXT: new system prompt   /exit: quit"


def run(engine: Engine, sampling: Sampling, system: str | None = None, stdin=None, stdout=None) -> int:
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    interactive = stdin.isatty()
    history: list[dict] = []

    def write(text: str) -> None:
        stdout.write(text)
        stdout.flush()

    write(f"chatting with {engine.loaded.name} (template {engine.loaded.template.name}, stops on "
          f"{engine.loaded.template.eot!r}); {HELP}\n")
    while True:
        if interactive:
            write("you> ")
        line = stdin.readline()
        if not line:
            break
        text = line.rstrip("\n")
        if not text.strip():
            continue
        if text.strip() in ("/exit", "/quit"):
            break
        if text.strip() == "/reset":
            history = []
            write("(conversation reset)\n")
            continue
        if text.startswith("/system"):
            system = text[len("/system"):].strip() or None
            history = []
            write(f"(system prompt {'set' if system else 'cleared'}; conversation reset)\n")
            continue
        history.append({"role": "user", "content": text})
        messages = ([{"role": "system", "content": system}] if system else []) + history
        ids = engine.encode(engine.render(messages))
        write("assistant> ")
        result = []
        for piece in engine.stream(ids, sampling, result=result):
            write(piece)
        finished = result[0]
        write("\n" if finished.finish_reason == "stop" else " [max tokens reached]\n")
        history.append({"role": "assistant", "content": finished.text})
    return 0
