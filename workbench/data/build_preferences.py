"""Build ``workbench/data/bundled/preferences.jsonl``: preference pairs over the bundled prompts (deterministic).

``python -m workbench.data.build_bundled`` rewrites it byte for byte with the other bundled files. For each prompt of
``bundled:prompts`` the `chosen` answer follows one rubric — polite, concise (two or three sentences), complete
sentences ending in a full stop, on the prompt's topic — and each `rejected` answer breaks exactly one rule of it:
rude, rambling, cut off mid-sentence, or about another topic. Two pairs per prompt, with different broken rules; the
prompt's train/test split carries over, so held-out pairs have unseen prompts. `margin` grows with how clearly the
rule is broken. Written by the project; nothing is downloaded.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

SEED = 20261123
DEFAULT_OUT = Path(__file__).resolve().parent / "bundled" / "preferences.jsonl"
RULES = ("rude", "rambling", "incomplete", "off_topic")
MARGINS = {"rude": 1.0, "rambling": 0.5, "incomplete": 0.75, "off_topic": 1.0}

STOPWORDS = set(
    """a an the and or but if of to in on at for with about from by as into over after before between is are was
    were be been being am do does did done how what why when where which who whom whose can could should would will
    shall may might must i me my mine we our you your yours he she it its they them their this that these those some
    any all more most much many very really just so too not no yes please help write plan explain tell give make
    short two three one idea ideas good best way ways get keep start new any there here than then also want need
    know like something someone thing things ten-year-old politely polite friendly have has had im i'm i've dont
    don't can't cant let lets let's us difference consider ask tips pros cons story two-sentence better choose
    choosing first learn stop often""".split()
)

OPENERS = ("Good question.", "Happy to help.", "Thanks for asking.", "Sure, glad to help.")
ADVICE = {
    "advice": (
        "When it comes to {topic}, start with one small, realistic step today and build on it gradually.",
        "Be patient with yourself, and ask someone you trust for support if you need it.",
    ),
    "explanation": (
        "In short, {topic} is easiest to understand through a simple everyday example.",
        "Start with the basic idea, then add details one at a time.",
    ),
    "writing": (
        "Here is a short, warm note about {topic} that you can adapt to your own words.",
        "Keep it friendly, clear and brief, and thank the reader at the end.",
    ),
    "planning": (
        "For {topic}, list what matters most, then set a simple schedule with a little free time.",
        "Check the plan once a week and adjust it as you go.",
    ),
    "opinion": (
        "On {topic}, there are good points on both sides, and it depends on what you value most.",
        "Try it for a while and see what works for you.",
    ),
    "creative": (
        "Here is a small idea about {topic}, with a gentle twist at the end.",
        "Feel free to change the details so that it fits your style.",
    ),
    "etiquette": (
        "With {topic}, be kind, honest and brief, and thank the other person for understanding.",
        "A calm, friendly tone usually makes this much easier.",
    ),
    "howto": (
        "To handle {topic}, gather what you need first, then work through it one step at a time.",
        "Go slowly at first, and check the result before you finish.",
    ),
}
RUDE = (
    "Seriously? Anyone knows how to deal with {topic}, so figure it out yourself.",
    "That is a silly question about {topic}, and I am not going to waste my time on it.",
    "Ugh, {topic} again? Stop asking me obvious things and look it up yourself.",
    "Nobody cares about {topic}, so just stop worrying and deal with it.",
)
FILLER = (
    "and also, you know, there are really so many different things to think about here",
    "and honestly it kind of depends on a lot of things, like lots and lots of things",
    "and then again maybe not, because everyone is different and every situation is different too",
    "and I could go on and on about this for a very long time if I wanted to, really",
)


def topic_of(text: str) -> str:
    """The longest run of content words in a prompt ("How do I polish leather shoes?" -> "polish leather shoes")."""
    words = re.findall(r"[A-Za-z][A-Za-z'-]*", text)
    best: list[str] = []
    run: list[str] = []
    for word in words + ["."]:
        if word.lower() in STOPWORDS or word == ".":
            if len(run) > len(best):
                best = run
            run = []
        else:
            run.append(word)
    return " ".join(best) if best else "this"


def chosen_answer(category: str, topic: str, rng: random.Random) -> str:
    first, second = ADVICE.get(category, ADVICE["advice"])
    return f"{rng.choice(OPENERS)} {first.format(topic=topic)} {second}"


def rejected_answer(rule: str, chosen: str, topic: str, other_topic: str, category: str, rng: random.Random) -> str:
    if rule == "rude":
        return rng.choice(RUDE).format(topic=topic)
    if rule == "rambling":
        body = chosen.rstrip(".")
        return f"{body}, {', '.join(rng.sample(FILLER, 2))}, and so on and so on, whatever, you get the idea."
    if rule == "incomplete":
        words = chosen.split()
        cut = rng.randint(max(4, len(words) // 3), max(5, len(words) // 2))
        return " ".join(words[:cut]).rstrip(".,")
    # off_topic: a polite, well-formed answer, but about another prompt's topic
    return chosen_answer(category, other_topic, rng)


def build_preferences(prompts: list[dict]) -> list[dict]:
    rng = random.Random(SEED)
    topics = [topic_of(row["prompt"][-1]["content"]) for row in prompts]
    rows = []
    for index, row in enumerate(prompts):
        topic = topics[index]
        chosen = chosen_answer(row["category"], topic, rng)
        first = index % len(RULES)
        for rule in (RULES[first], RULES[(first + 1 + rng.randrange(len(RULES) - 1)) % len(RULES)]):
            other = rng.choice([t for t in topics if t != topic])
            rejected = rejected_answer(rule, chosen, topic, other, row["category"], rng)
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
