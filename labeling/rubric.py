"""The gold rubric: a documented, deterministic judgement of an answer, `score(prompt_messages, completion) -> float`.

It stands in for a human labeler: the simulated annotator ranks by it, and evaluation uses it as the gold preference
function (does the aligned policy write answers the rubric prefers?). It looks only at surface features, so a small
reward model can learn it from a few hundred rankings. Five parts, each in [0, 1], weighted and summed (0 to 5):

| part | weight | 1.0 when | falls to 0 when |
|---|---|---|---|
| complete | 1.0 | it starts with a capital letter and ends with . ! ? (closing quotes/brackets allowed) | neither |
| length | 1.0 | 15 to 120 words | linearly to 0 words, and to 0 at 240 words |
| no repetition | 1.5 | every word 3-gram appears once | the text is one 3-gram repeated |
| on topic | 1.0 | it reuses half or more of the user's content words | it shares none of them |
| polite | 0.5 | no rude word | each rude word costs 0.5 |

An empty answer scores 0. `RUBRIC_VERSION` names this definition; change it whenever a rule changes.
"""

from __future__ import annotations

import re

RUBRIC_VERSION = "gold-rubric-v1"
WEIGHTS = {"complete": 1.0, "length": 1.0, "no_repetition": 1.5, "on_topic": 1.0, "polite": 0.5}
LENGTH_BAND = (15, 120)
WORD = re.compile(r"[a-z0-9']+")
STOPWORDS = frozenset(
    "a an and are as at be been but by can could do does for from had has have how i if in into is it its me my "
    "of on or our should so than that the their them then there these they this to too was we what when where "
    "which who why will with would you your about any some just more most very also want need tell give please".split()
)
RUDE = frozenset("stupid idiot dumb shut hate useless moron pathetic ridiculous whatever".split())
ENDING = re.compile(r"[.!?][\"')\]]*$")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def complete(text: str) -> float:
    stripped = text.strip()
    starts = stripped[:1].isupper() or stripped[:1].isdigit()
    return 0.5 * starts + 0.5 * bool(ENDING.search(stripped))


def length(text: str) -> float:
    low, high = LENGTH_BAND
    count = len(words(text))
    if count < low:
        return count / low
    if count > high:
        return max(0.0, 1.0 - (count - high) / high)
    return 1.0


def no_repetition(text: str) -> float:
    tokens = words(text)
    grams = [tuple(tokens[i : i + 3]) for i in range(len(tokens) - 2)]
    if len(grams) < 2:
        return 1.0
    return (len(set(grams)) - 1) / (len(grams) - 1)


def content_words(text: str) -> set[str]:
    return {w for w in words(text) if len(w) > 3 and w not in STOPWORDS}


def on_topic(prompt_messages: list[dict], text: str) -> float:
    users = [m["content"] for m in prompt_messages if m.get("role") == "user"]
    asked = content_words(users[-1]) if users else set()
    if not asked:
        return 1.0
    shared = len(asked & content_words(text)) / len(asked)
    return min(1.0, 2.0 * shared)


def polite(text: str) -> float:
    rude = sum(1 for w in words(text) if w in RUDE)
    return max(0.0, 1.0 - 0.5 * rude)


def parts(prompt_messages: list[dict], completion: str) -> dict[str, float]:
    """Each part of the rubric for one answer (for explaining a score)."""
    return {
        "complete": complete(completion),
        "length": length(completion),
        "no_repetition": no_repetition(completion),
        "on_topic": on_topic(prompt_messages, completion),
        "polite": polite(completion),
    }


def points(prompt_messages: list[dict], completion: str) -> dict[str, float]:
    """Each part's points (its weight times its value; all 0 for an empty answer): they sum to `score`, so a
    difference in gold score splits into what each part of the rubric contributes to it."""
    if not completion.strip():
        return dict.fromkeys(WEIGHTS, 0.0)
    return {name: WEIGHTS[name] * value for name, value in parts(prompt_messages, completion).items()}


def score(prompt_messages: list[dict], completion: str) -> float:
    """The gold score of `completion` as an answer to the conversation `prompt_messages` (higher is better)."""
    return sum(points(prompt_messages, completion).values())
