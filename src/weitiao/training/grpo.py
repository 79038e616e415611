"""GRPO on TRL's GRPOTrainer: weitiao's rows as TRL's prompts, and weitiao's rewards as TRL's reward functions.

GRPO (Shao et al. 2024, arXiv:2402.03300, sec. 4.1) samples G answers o_1..o_G for each prompt q from the policy,
scores each with a reward r_i, and trains every token of o_i on the advantage A_i = (r_i - mean(r)) / std(r) with
PPO's clipped objective: the group's mean reward stands in for PPO's value model, so nothing but the policy is
trained. TRL's GRPOTrainer runs that loop (sampling, advantages, the clipped loss, DAPO's and Dr. GRPO's ways of
averaging it); weitiao writes no loop of its own. What weitiao adds: prompts rendered by the run's own chat
template (installed on the tokenizer), generation stopped by the template's end-of-turn tokens, and rewards
resolved from the config and checked for what they return, so a reward that returns a string stops training with
one message that names it and the row, not a tensor error three frames deep.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from weitiao.data.formats import Example
from weitiao.errors import WeitiaoError


@dataclass
class Reward:
    """One entry of grpo.rewards: its name as configured and how it scores answers to rows."""

    name: str
    score: Callable[[list[Example], list[str]], list]  # (rows, answers) -> one number per answer
    weight: float = 1.0


def reference(example: Example) -> str:
    """The row's reference answer: its last (assistant) turn."""
    return example.messages[-1][1]


def resolve_rewards(names: list[str], weights: list[float], device: str, amp=None, batch_size: int = 16
                    ) -> list[Reward]:
    """grpo.rewards as Reward objects: a metric or `module:function` scores (answer, reference) row by row; a
    `task: reward` run folder scores the conversation ending with the answer (evaluation.reward.RewardScorer,
    loaded once, on first use)."""
    from weitiao.evaluation.metrics import metric
    from weitiao.evaluation.reward import RewardScorer

    rewards = []
    for i, name in enumerate(names):
        if Path(name).expanduser().is_dir():
            def score(rows, answers, run=name):
                return RewardScorer.of(run, device, amp, batch_size).score(rows, answers)
        else:
            def score(rows, answers, func=metric(name)):
                return [func(answer, reference(row)) for row, answer in zip(rows, answers)]
        rewards.append(Reward(name, score, weights[i] if weights else 1.0))
    return rewards


def checked(reward: Reward, rows: list[Example], answers: list[str]) -> list[float]:
    """The reward's numbers for `answers`, each a finite int or float; else one error naming the reward and row."""
    try:
        values = list(reward.score(rows, answers))
    except WeitiaoError:
        raise
    except Exception as err:  # noqa: BLE001 - a user's reward function may raise anything: name it and the row
        raise WeitiaoError(f"grpo.rewards: {reward.name} raised {type(err).__name__}: {err} (scoring an answer to "
                           f"{rows[0].where})") from None
    if len(values) != len(answers):
        raise WeitiaoError(f"grpo.rewards: {reward.name} returned {len(values)} values for {len(answers)} answers")
    for row, value in zip(rows, values):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise WeitiaoError(f"grpo.rewards: {reward.name} returned {value!r} ({type(value).__name__}) for an "
                               f"answer to {row.where}; a reward is a finite number (int or float)")
    return [float(v) for v in values]


def probe(rewards: list[Reward], example: Example) -> None:
    """Each function reward on one row, its reference as the answer, before any model loads: a function that
    cannot run or returns no number is reported now. Reward-model runs are not probed (loading one is the cost
    this saves) and always return numbers."""
    for reward in rewards:
        if not Path(reward.name).expanduser().is_dir():
            checked(reward, [example], [reference(example)])


def prompt_dataset(examples: list[Example]):
    """TRL's prompt dataset: each row's turns before its reference answer, as role/content messages (TRL renders
    them with the tokenizer's chat template, weitiao's own), and the row's index, by which the rewards find the
    row and its reference."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": ex.as_messages()[:-1], "row": i} for i, ex in enumerate(examples)])


def reward_functions(rewards: list[Reward], examples: list[Example]) -> list[Callable]:
    """One TRL reward function per reward: (prompts, completions, row, ...) -> floats, each checked."""
    funcs = []
    for reward in rewards:
        def func(prompts, completions, row, reward=reward, **_):
            answers = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
            return checked(reward, [examples[i] for i in row], [a.strip() for a in answers])
        func.__name__ = reward.name  # TRL logs each function's mean reward under its __name__
        funcs.append(func)
    return funcs


def reward_curve(log_history: list[dict], rewards: list[Reward]) -> list[dict]:
    """Per logged step: the mean weighted reward of the sampled answers, its spread within groups, and each
    reward's own mean (TRL logs them as `reward`, `reward_std`, `rewards/NAME/mean`)."""
    curve = []
    for entry in log_history:
        if "reward" not in entry:
            continue
        curve.append({"step": entry.get("step"), "reward": round(entry["reward"], 5),
                      "reward_std": round(entry.get("reward_std", float("nan")), 5),
                      **{r.name: round(entry[f"rewards/{r.name}/mean"], 5) for r in rewards
                         if f"rewards/{r.name}/mean" in entry},
                      "completion_length": round(entry.get("completions/mean_length", float("nan")), 2)})
    return curve
