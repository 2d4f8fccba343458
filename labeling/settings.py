"""The Argilla dataset a round of ranking lives in: what labelers see, what they answer, and what we record.

Fields: `prompt` (the conversation so far, a chat field the UI shows as a chat transcript) and `response_1` …
`response_K` (the candidates, as plain text). Questions: `ranking` (a RankingQuestion over the K responses; equal
ranks are allowed and mean "equally good") and an optional `comment`. Metadata: `policy` (the adapter that wrote the
candidates), `round`, `prompt_id`, and the active-selection numbers `uncertainty` and `diversity`
(labeling/selection.py), which a labeler's queue can be sorted and filtered by. `min_submitted` annotators must
submit a record before it counts as completed.
"""

from __future__ import annotations

RANKING = "ranking"
COMMENT = "comment"
PROMPT = "prompt"
UNCERTAINTY = "uncertainty"
DIVERSITY = "diversity"

GUIDELINES = """\
## Rank the answers

Each record shows a conversation and {k} candidate answers written by the assistant we are training.
**Rank them from best (1) to worst** by dragging each answer into a rank.

A good answer:

1. **Answers what was asked**: it stays on the user's topic and actually helps.
2. **Is correct and safe**: no made-up facts, no harmful advice.
3. **Is complete and clear**: whole sentences, ends properly, no rambling or repeated text.
4. **Is the right length**: as short as it can be while still answering.
5. **Is polite**: friendly, never rude or dismissive.

If two answers are equally good (or equally bad), **give them the same rank**: put them in the same slot. Ties are
fine and teach the model nothing false; do not break a tie at random.

If every answer is broken (empty, gibberish, off-topic), still rank them, and say so in the comment.
Use the comment for anything the next person should know (unsafe content, a prompt that makes no sense).

**Submit** when you are done with a record; **Discard** only if the record cannot be judged at all (a broken
prompt). Discarded and draft answers are not used for training.
"""


def response_name(index: int) -> str:
    """Field and ranking-option name of the `index`-th candidate (0-based): response_1, response_2, ..."""
    return f"response_{index + 1}"


def response_names(k: int) -> list[str]:
    return [response_name(i) for i in range(k)]


def build_settings(k: int, min_submitted: int = 1, comment: bool = True, client=None):
    """`rg.Settings` for ranking K candidates per prompt."""
    import argilla as rg

    # A chat field shows the conversation as chat bubbles and hands the exact messages back to `pull`.
    fields = [rg.ChatField(name=PROMPT, title="Conversation", use_markdown=True, _client=client)]
    fields += [
        rg.TextField(name=name, title=f"Response {i + 1}", use_markdown=False, client=client)
        for i, name in enumerate(response_names(k))
    ]
    questions = [
        rg.RankingQuestion(
            name=RANKING,
            title="Rank the responses from best (1) to worst; equally good responses share a rank",
            values={name: f"Response {i + 1}" for i, name in enumerate(response_names(k))},
            required=True,
            client=client,
        )
    ]
    if comment:
        questions.append(rg.TextQuestion(name=COMMENT, title="Comment (optional)", required=False, client=client))
    metadata = [
        rg.TermsMetadataProperty(name="policy", title="Policy adapter", client=client),
        rg.IntegerMetadataProperty(name="round", title="Round", client=client),
        rg.TermsMetadataProperty(name="prompt_id", title="Prompt id", client=client),
    ]
    metadata += selection_properties(client)
    return rg.Settings(
        fields=fields,
        questions=questions,
        metadata=metadata,
        guidelines=GUIDELINES.format(k=k),
        distribution=rg.TaskDistribution(min_submitted=min_submitted),
    )


def selection_properties(client=None) -> list:
    """Float metadata for active selection (labeling/selection.py): the reward model's uncertainty about a record's
    ranking and how different its candidates are. Visible to annotators, who can sort their queue by them."""
    import argilla as rg

    return [
        rg.FloatMetadataProperty(name=UNCERTAINTY, title="Reward model uncertainty (bits)", client=client),
        rg.FloatMetadataProperty(name=DIVERSITY, title="Candidate diversity", client=client),
    ]


def ensure_selection_properties(client, dataset) -> None:
    """Add the selection metadata properties to a dataset created before they existed."""
    names = {prop.name for prop in dataset.settings.metadata}
    for prop in selection_properties(client):
        if prop.name not in names:
            prop.dataset = dataset
            prop.create()


def dataset_k(dataset) -> int:
    """How many response fields an existing dataset has (0 when it is not a ranking dataset of ours)."""
    names = {field.name for field in dataset.settings.fields}
    k = 0
    while response_name(k) in names:
        k += 1
    return k if RANKING in {q.name for q in dataset.settings.questions} else 0


def ranking_value(ranks: list[int]) -> list[dict]:
    """An Argilla ranking answer from 1-based ranks per candidate (ties share a rank), best first."""
    order = sorted(range(len(ranks)), key=lambda i: (ranks[i], i))
    return [{"value": response_name(i), "rank": int(ranks[i])} for i in order]


def first_place_probabilities(scores: list[float]) -> list[float]:
    """Each candidate's probability of being the best under the reward model (Plackett-Luce: the softmax of the
    scores), the [0, 1] confidence Argilla accepts as a suggestion's score."""
    import math

    top = max(scores)
    weights = [math.exp(score - top) for score in scores]
    return [weight / sum(weights) for weight in weights]


def ranking_suggestion(scores: list[float], agent: str, question_id: str) -> dict:
    """A reward model's ranking as an Argilla suggestion (REST form): higher score, better rank; each rank's score is
    that candidate's probability of being the best (Argilla refuses scores outside [0, 1])."""
    from .aggregate import dense_ranks

    value = ranking_value(dense_ranks(scores, higher_is_better=True))
    by_name = {response_name(i): round(p, 6) for i, p in enumerate(first_place_probabilities(scores))}
    return {
        "question_id": question_id,
        "type": "model",
        "value": value,
        "score": [by_name[item["value"]] for item in value],
        "agent": agent,
    }
