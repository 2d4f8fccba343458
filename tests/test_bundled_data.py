"""The bundled datasets: schema, splits, exact answers re-computed, and byte-identical regeneration."""

from __future__ import annotations

import ast
import collections
import datetime as dt
import json
import re
from decimal import Decimal

import pytest

from workbench.data import build_bundled
from workbench.data.bundled import BUNDLED_DIR, BUNDLED_FILES, bundled_path
from workbench.errors import UserError

MAX_CHARS = 900  # rough stand-in for "under ~200 SmolLM2 tokens"


def _load(name: str) -> list[dict]:
    rows = []
    with bundled_path(name).open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            assert line.strip(), f"{name}: blank line {i}"
            rows.append(json.loads(line))
    return rows


@pytest.fixture(scope="module")
def instructions() -> list[dict]:
    return _load("instructions")


@pytest.fixture(scope="module")
def prompts() -> list[dict]:
    return _load("prompts")


@pytest.fixture(scope="module")
def quotes() -> list[dict]:
    return _load("quotes")


def _by_category(rows: list[dict], category: str) -> list[tuple[str, str]]:
    return [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in rows if r["category"] == category]


# --------------------------------------------------------------------------------------------------- files, paths


def test_every_listed_file_exists_and_parses() -> None:
    assert set(BUNDLED_FILES) == {p.name for p in BUNDLED_DIR.glob("*.jsonl")}
    for name in BUNDLED_FILES:
        assert bundled_path(name) == bundled_path(name.removesuffix(".jsonl"))
        assert _load(name)


def test_unknown_name_lists_available_files() -> None:
    with pytest.raises(UserError) as err:
        bundled_path("nope")
    for name in BUNDLED_FILES:
        assert name in str(err.value)


def test_generator_reproduces_committed_files(tmp_path) -> None:
    counts = build_bundled.build(tmp_path)
    for name in BUNDLED_FILES:
        assert (tmp_path / name).read_bytes() == (BUNDLED_DIR / name).read_bytes(), (
            f"{name} differs from the generator's output: run `python -m workbench.data.build_bundled`"
        )
        assert counts[name] == len(_load(name))


def test_generator_cli_out_option(tmp_path) -> None:
    build_bundled.main(["--out", str(tmp_path / "x")])
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == sorted(BUNDLED_FILES)


def test_sources_documented_and_parse() -> None:
    readme = (build_bundled.SOURCES_DIR / "README.md").read_text(encoding="utf-8")
    sources = sorted(p for p in build_bundled.SOURCES_DIR.iterdir() if p.name != "README.md")
    assert sources
    for path in sources:
        assert f"`{path.name}`" in readme, f"{path.name} is not described in sources/README.md"
        if path.suffix in {".json", ".jsonl"}:
            assert build_bundled.load_source(path.stem), path.name


# --------------------------------------------------------------------------------------------------- instructions


def test_instructions_schema(instructions) -> None:
    assert 550 <= len(instructions) <= 650
    for row in instructions:
        assert set(row) == {"messages", "category", "split"}
        assert row["split"] in {"train", "test"}
        assert isinstance(row["category"], str) and row["category"]
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        for message in row["messages"]:
            assert set(message) == {"role", "content"}
            assert isinstance(message["content"], str) and message["content"].strip() == message["content"]
            assert message["content"]
        answer = row["messages"][1]["content"]
        assert answer.endswith(".") or answer.endswith('."'), answer
        text = row["messages"][0]["content"] + row["messages"][1]["content"]
        assert len(text) < MAX_CHARS, text


def test_instructions_unique_user_turns(instructions) -> None:
    users = [r["messages"][0]["content"] for r in instructions]
    assert len(users) == len(set(users))


def test_instructions_split_is_stratified(instructions) -> None:
    test = [r for r in instructions if r["split"] == "test"]
    assert 70 <= len(test) <= 90
    total = collections.Counter(r["category"] for r in instructions)
    held = collections.Counter(r["category"] for r in test)
    assert len(total) >= 10
    for category, n in total.items():
        assert 1 <= held[category] < n, category
        assert abs(held[category] / n - len(test) / len(instructions)) < 0.05, category


_NUM = r"-?\d+(?:\.\d+)?"
_EQUATION = re.compile(rf"({_NUM}) ([+\-×÷]) ({_NUM}) (=|≈) ({_NUM})")
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "×": lambda a, b: a * b, "÷": lambda a, b: a / b}


def _check_equations(answer: str) -> int:
    found = 0
    for a, op, b, rel, c in _EQUATION.findall(answer):
        exact = _OPS[op](Decimal(a), Decimal(b))
        stated = Decimal(c)
        if rel == "=":
            assert exact == stated, answer
        else:
            places = -stated.as_tuple().exponent
            assert abs(exact - stated) <= Decimal(5) / 10 ** (places + 1), answer
        found += 1
    return found


def _arithmetic_expected(question: str) -> str:
    nums = [int(x) for x in re.findall(r"\d+", question)]
    if "%" in question:
        return format((Decimal(nums[0]) / 100 * nums[1]).normalize(), "f")
    if "squared" in question:
        return str(nums[0] ** 2)
    a, b = nums
    if "remainder" in question:
        return f"{a // b} remainder {a % b}"
    if re.search(r"\+|add|sum", question):
        return str(a + b)
    if re.search(r"subtract", question):
        return str(b - a)
    if re.search(r" - |minus", question):
        return str(a - b)
    if re.search(r"×|multiply|times", question):
        return str(a * b)
    if re.search(r"÷|divide", question):
        assert a % b == 0, question
        return str(a // b)
    raise AssertionError(f"unrecognised arithmetic question: {question}")


def test_arithmetic_answers_recomputed(instructions) -> None:
    pairs = _by_category(instructions, "arithmetic")
    assert len(pairs) >= 50
    for question, answer in pairs:
        assert _check_equations(answer) >= 1, answer
        final = re.search(r"The answer is (.+)\.$", answer).group(1)
        assert final == _arithmetic_expected(question), (question, answer)


def test_unit_conversions_recomputed(instructions) -> None:
    pairs = _by_category(instructions, "unit_conversion")
    assert len(pairs) >= 30
    for question, answer in pairs:
        assert _check_equations(answer) >= 1, answer
        value = re.search(r"-?\d+", question).group(0)
        assert f" {value} " in f" {answer}", (question, answer)


def test_counting_answers_recomputed(instructions) -> None:
    for question, answer in _by_category(instructions, "counting"):
        if m := re.fullmatch(r'How many times does the letter "(.)" appear in "(\w+)"\?', question):
            letter, word = m.groups()
            k = word.count(letter)
            assert f"appears {'once' if k == 1 else f'{k} times'} in" in answer, answer
        elif m := re.fullmatch(r'How many letters are in the word "(\w+)"\?', question):
            assert f"has {len(m.group(1))} letters" in answer, answer
        elif m := re.fullmatch(r'How many words are in the sentence "(.+)"\?', question):
            assert f"has {len(m.group(1).split())} words" in answer, answer
        elif m := re.fullmatch(r'How many vowels are in the word "(\w+)"\?', question):
            assert f"has {sum(ch in 'aeiou' for ch in m.group(1))} vowels" in answer, answer
        else:
            raise AssertionError(question)


def _items(text: str) -> list:
    items = [x.strip() for x in text.rstrip(".?").split(",")]
    return [int(x) for x in items] if all(x.isdigit() for x in items) else items


def test_list_answers_recomputed(instructions) -> None:
    for question, answer in _by_category(instructions, "lists"):
        given = _items(question.split(": ", 1)[1])
        if "the largest number" in question or "the smallest number" in question:
            expected = max(given) if "largest" in question else min(given)
            assert answer.endswith(f" is {expected}."), answer
            continue
        got = _items(answer.split(": ", 1)[1])
        if "smallest to largest" in question or "alphabetical" in question:
            assert got == sorted(given), answer
        elif "largest to smallest" in question:
            assert got == sorted(given, reverse=True), answer
        elif question.startswith("Reverse"):
            assert got == given[::-1], answer
        elif "duplicates" in question:
            assert got == list(dict.fromkeys(given)), answer
        else:
            raise AssertionError(question)


def _date(text: str) -> dt.date:
    return dt.datetime.strptime(text, "%B %d, %Y").date()


def test_date_answers_recomputed(instructions) -> None:
    date = r"([A-Z][a-z]+ \d{1,2}, \d{4})"
    for question, answer in _by_category(instructions, "dates"):
        if m := re.fullmatch(rf"How many days are there from {date} to {date}\?", question):
            days = (_date(m.group(2)) - _date(m.group(1))).days
            assert answer.startswith(f"There are {days} days "), answer
        elif m := re.fullmatch(rf"What day of the week is {date}\?", question):
            assert answer.endswith(f" is a {_date(m.group(1)):%A}."), answer
        elif m := re.fullmatch(rf"What date is (\d+) days after {date}\?", question):
            later = _date(m.group(2)) + dt.timedelta(days=int(m.group(1)))
            assert answer.endswith(f" is {later:%B} {later.day}, {later.year}."), answer
        else:
            raise AssertionError(question)


def test_capitals_consistent_with_table(instructions) -> None:
    table = build_bundled.load_source("capitals")
    for question, answer in _by_category(instructions, "capitals"):
        if m := re.fullmatch(r"The capital of (.+) is (.+)\.", answer):
            assert table[m.group(1)] == m.group(2) and m.group(1) in question
        else:
            city, country = re.fullmatch(r"(.+) is the capital of (.+)\.", answer).groups()
            assert table[country] == city and city in question


def test_python_answers_recomputed(instructions) -> None:
    for question, answer in _by_category(instructions, "python"):
        if question.startswith("Write a Python function"):
            code = re.search(r"```python\n(.*?)\n```", answer, re.S).group(1)
            call, result = re.search(r"For example, `(.+)` returns `(.+)`\.$", answer).groups()
            env: dict = {}
            exec(code, env)  # noqa: S102 - the dataset's own snippet
            assert repr(eval(call, env)) == result, answer  # noqa: S307
        else:
            expr, result = re.fullmatch(r"`(.+)` returns `(.+)`\. .+\.", answer).groups()
            assert expr in question
            assert eval(expr, {}) == ast.literal_eval(result), answer  # noqa: S307


# --------------------------------------------------------------------------------------------------- quotes


def test_quotes_schema(quotes) -> None:
    assert 100 <= len(quotes) <= 160
    for row in quotes:
        assert set(row) == {"quote", "author", "tags"}
        assert row["quote"].strip() and row["author"].strip()
        assert row["tags"] and all(isinstance(t, str) and t for t in row["tags"])
        assert len("Quote: {quote}\nAuthor: {author}".format(**row)) < MAX_CHARS
    assert len({r["quote"] for r in quotes}) == len(quotes)
    assert len({r["author"] for r in quotes}) >= 30


# --------------------------------------------------------------------------------------------------- prompts


def test_prompts_schema_and_ids(prompts) -> None:
    assert len(prompts) == 420
    assert [r["prompt_id"] for r in prompts] == [f"p{i:04d}" for i in range(1, len(prompts) + 1)]
    for row in prompts:
        assert set(row) == {"prompt_id", "prompt", "category", "split"}
        assert row["split"] in {"train", "test"}
        assert len(row["prompt"]) == 1 and set(row["prompt"][0]) == {"role", "content"}
        assert row["prompt"][0]["role"] == "user"
        content = row["prompt"][0]["content"]
        assert content.strip() == content and content and len(content) < MAX_CHARS
    texts = [r["prompt"][0]["content"] for r in prompts]
    assert len(set(texts)) == len(texts)


def test_prompts_split(prompts) -> None:
    test = [r for r in prompts if r["split"] == "test"]
    assert 170 <= len(test) <= 190  # 50-70 drawn per category, then the 120 hand-written held-out prompts
    total = collections.Counter(r["category"] for r in prompts)
    held = collections.Counter(r["category"] for r in test)
    for category, n in total.items():
        assert 1 <= held[category] < n, category


def test_held_out_prompts_share_no_topic_with_training_prompts(prompts) -> None:
    """The 120 hand-written held-out prompts (p0301 on) are all in the test split, and none shares more than two
    content words with a training prompt (no paraphrase of one)."""

    def content(row):
        return {w for w in re.findall(r"[a-z]+", row["prompt"][0]["content"].lower()) if len(w) > 3}

    held_out = prompts[300:]
    assert len(held_out) == 120 and all(row["split"] == "test" for row in held_out)
    train = [content(row) for row in prompts if row["split"] == "train"]
    assert max(len(content(row) & other) for row in held_out for other in train) <= 2


def test_prompts_distinct_from_instructions(prompts, instructions) -> None:
    users = {r["messages"][0]["content"].lower() for r in instructions}
    assert not users & {r["prompt"][0]["content"].lower() for r in prompts}
