"""Build ``workbench/data/bundled/preferences.jsonl``: preference pairs over the bundled prompts (deterministic).

``python -m workbench.data.build_bundled`` rewrites it byte for byte with the other bundled files. For each prompt of
``bundled:prompts`` the `chosen` answer follows one rubric — polite, concise (two or three sentences), complete
sentences ending in a full stop, on the prompt's topic — and each `rejected` answer breaks exactly one rule of it:
rude, rambling, cut off mid-sentence, or about another topic. Two pairs per prompt, with different broken rules; the
prompt's train/test split carries over, so held-out pairs have unseen prompts. `margin` grows with how clearly the
rule is broken. The answer templates and the stop words of ``topic_of`` are data files in ``workbench/data/sources/``
(``preference_answers.json``, ``topic_stopwords.txt``); this module holds the logic. Written by the project; nothing
is downloaded.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

SEED = 20261123
DEFAULT_OUT = Path(__file__).resolve().parent / "bundled" / "preferences.jsonl"
RULES = ("rude", "rambling", "incomplete", "off_topic")
MARGINS = {"rude": 1.0, "rambling": 0.5, "incomplete": 0.75, "off_topic": 1.0}

SOURCES_DIR = Path(__file__).resolve().parent / "sources"


def load_answers() -> dict:
    """The answer templates of ``sources/preference_answers.json``: openers, chosen (by category), rude, filler."""
    return json.loads((SOURCES_DIR / "preference_answers.json").read_text(encoding="utf-8"))


def load_stopwords() -> set[str]:
    """The words ``topic_of`` skips (``sources/topic_stopwords.txt``, whitespace-separated, lower case)."""
    return set((SOURCES_DIR / "topic_stopwords.txt").read_text(encoding="utf-8").split())


def topic_of(text: str, stopwords: set[str] | None = None) -> str:
    """The longest run of content words in a prompt ("How do I polish leather shoes?" -> "polish leather shoes")."""
    stopwords = load_stopwords() if stopwords is None else stopwords
    words = re.findall(r"[A-Za-z][A-Za-z'-]*", text)
    best: list[str] = []
    run: list[str] = []
    for word in words + ["."]:
        if word.lower() in stopwords or word == ".":
            if len(run) > len(best):
                best = run
            run = []
        else:
            run.append(word)
    return " ".join(best) if best else "this"


def chosen_answer(category: str, topic: str, rng: random.Random, answers: dict) -> str:
    first, second = answers["chosen"].get(category, answers["chosen"]["advice"])
    return f"{rng.choice(answers['openers'])} {first.format(topic=topic)} {second}"


def rejected_answer(
    rule: str, chosen: str, topic: str, other_topic: str, category: str, rng: random.Random, answers: dict
) -> str:
    if rule == "rude":
        return rng.choice(answers["rude"]).format(topic=topic)
    if rule == "rambling":
        body = chosen.rstrip(".")
        filler = ", ".join(rng.sample(answers["filler"], 2))
        return f"{body}, {filler}, and so on and so on, whatever, you get the idea."
    if rule == "incomplete":
        words = chosen.split()
        cut = rng.randint(max(4, len(words) // 3), max(5, len(words) // 2))
        return " ".join(words[:cut]).rstrip(".,")
    # off_topic: a polite, well-formed answer, but about another prompt's topic
    return chosen_answer(category, other_topic, rng, answers)


def build_preferences(prompts: list[dict]) -> list[dict]:
    rng = random.Random(SEED)
    answers, stopwords = load_answers(), load_stopwords()
    topics = [topic_of(row["prompt"][-1]["content"], stopwords) for row in prompts]
    rows = []
    for index, row in enumerate(prompts):
        topic = topics[index]
        chosen = chosen_answer(row["category"], topic, rng, answers)
        first = index % len(RULES)
        for rule in (RULES[first], RULES[(first + 1 + rng.randrange(len(RULES) - 1)) % len(RULES)]):
            other = rng.choice([t for t in topics if t != topic])
            rejected = rejected_answer(rule, chosen, topic, other, row["category"], rng, answers)
            rows.append(
                {
                    "prompt_id": row["prompt_id"],
                    "prompt": row["prompt"],
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                    "margin": MARGINS[rule],
                    "rule": rule,
                    "split": row["split"],
                }
            )
    return rows
