"""Build the bundled datasets in ``workbench/data/bundled/`` from the editable files in ``workbench/data/sources/``.

Run ``python -m workbench.data.build_bundled`` to rewrite the committed files byte for byte, or
``python -m workbench.data.build_bundled --out DIR`` to write them elsewhere. The content (hand-written question/answer
pairs, word and number tables, public-domain quotations, open-ended prompts) lives in ``sources/``, described in its
README; this module holds only the logic: templated families whose answers are computed exactly here, seeded draws,
de-duplication and the train/test splits. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

SEED = 20261122
DEFAULT_OUT = Path(__file__).resolve().parent / "bundled"
SOURCES_DIR = Path(__file__).resolve().parent / "sources"
INSTRUCTIONS_TEST_FRACTION = 80 / 600
PROMPTS_TEST_FRACTION = 60 / 300


def load_source(name: str) -> Any:
    """The content of ``sources/<name>.json`` (any JSON value) or ``sources/<name>.jsonl`` (a list, one item a line).

    ``load_source("capitals")`` is a dict country -> capital, ``load_source("qa_pairs")`` a list of dicts.
    """
    path = SOURCES_DIR / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    path = SOURCES_DIR / f"{name}.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def qa_pairs() -> dict[str, list[tuple[str, str]]]:
    """Hand-written (question, answer) pairs by category, categories in order of first appearance."""
    by_category: dict[str, list[tuple[str, str]]] = {}
    for row in load_source("qa_pairs"):
        by_category.setdefault(row["category"], []).append((row["question"], row["answer"]))
    return by_category


# ---------------------------------------------------------------------------------------------------------------
# Templated families: answers are computed here, exactly; their word and number tables come from sources/.
# ---------------------------------------------------------------------------------------------------------------


def _fmt_date(d: dt.date) -> str:
    return f"{d:%B} {d.day}, {d.year}"


def _dec(x: Decimal) -> str:
    """A Decimal written plainly, without trailing zeros or exponent."""
    return format(x.normalize(), "f")


def _round2(x: Decimal) -> str:
    return _dec(x.quantize(Decimal("0.01")))


def _nums(rng: random.Random, k: int, lo: int = 1, hi: int = 99) -> list[int]:
    return rng.sample(range(lo, hi + 1), k)


def _join_list(items: list) -> str:
    return ", ".join(str(x) for x in items)


def _spell(word: str) -> str:
    return "-".join(word)


def _add_steps(a: int, b: int, sign: str) -> str:
    """'347 + 200 = 547, 547 + 80 = 627, and 627 + 5 = 632' (place-value steps)."""
    parts = [p for p in (b // 100 * 100, b // 10 % 10 * 10, b % 10) if p]
    steps, cur = [], a
    for p in parts:
        nxt = cur + p if sign == "+" else cur - p
        steps.append(f"{cur} {sign} {p} = {nxt}")
        cur = nxt
    if len(steps) == 1:
        return steps[0]
    return ", ".join(steps[:-1]) + ", and " + steps[-1]


def arithmetic_examples(rng: random.Random, n: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    kinds = ["add", "sub", "mul", "div", "divr", "pct", "sq"]
    add_q = ["What is {a} + {b}?", "Can you add {a} and {b}?", "What is the sum of {a} and {b}?"]
    sub_q = ["What is {a} - {b}?", "Can you subtract {b} from {a}?", "What is {a} minus {b}?"]
    mul_q = ["What is {a} × {b}?", "Can you multiply {a} by {b}?", "What is {a} times {b}?"]
    div_q = ["What is {a} ÷ {b}?", "Can you divide {a} by {b}?"]
    i = 0
    while len(out) < n:
        kind = kinds[i % len(kinds)]
        i += 1
        if kind == "add":
            a, b = rng.randint(12, 899), rng.randint(12, 899)
            q = rng.choice(add_q).format(a=a, b=b)
            ans = f"Add {b} to {a} in parts: {_add_steps(a, b, '+')}. The answer is {a + b}."
        elif kind == "sub":
            a, b = sorted((rng.randint(12, 999), rng.randint(11, 998)), reverse=True)
            if a == b:
                continue
            q = rng.choice(sub_q).format(a=a, b=b)
            ans = f"Subtract {b} from {a} in parts: {_add_steps(a, b, '-')}. The answer is {a - b}."
        elif kind == "mul":
            a, b = rng.randint(12, 99), rng.randint(3, 19)
            tens, ones = a // 10 * 10, a % 10
            q = rng.choice(mul_q).format(a=a, b=b)
            if ones:
                ans = (
                    f"Split {a} into {tens} and {ones}: {tens} × {b} = {tens * b} and {ones} × {b} = {ones * b}, "
                    f"so {tens * b} + {ones * b} = {a * b}. The answer is {a * b}."
                )
            else:
                ans = f"{a} × {b} = {a * b}. The answer is {a * b}."
        elif kind == "div":
            b, c = rng.randint(2, 12), rng.randint(3, 60)
            a = b * c
            q = rng.choice(div_q).format(a=a, b=b)
            ans = f"Since {b} × {c} = {a}, {a} ÷ {b} = {c}. The answer is {c}."
        elif kind == "divr":
            b, c = rng.randint(3, 12), rng.randint(3, 40)
            r = rng.randint(1, b - 1)
            a = b * c + r
            q = f"What is {a} divided by {b}, with the remainder?"
            ans = (
                f"{b} × {c} = {b * c} and {a} - {b * c} = {r}, so {a} divided by {b} is {c} with a remainder of "
                f"{r}. The answer is {c} remainder {r}."
            )
        elif kind == "pct":
            p = rng.choice([5, 10, 15, 20, 25, 30, 40, 50, 60, 75, 80])
            base = rng.choice([20, 40, 60, 80, 120, 160, 200, 240, 300, 400, 500, 640, 800, 1000])
            frac = Decimal(p) / 100
            val = frac * base
            q = f"What is {p}% of {base}?"
            ans = (
                f"{p}% means {p} ÷ 100 = {_dec(frac)}, so {p}% of {base} is {_dec(frac)} × {base} = {_dec(val)}. "
                f"The answer is {_dec(val)}."
            )
        else:
            a = rng.randint(11, 40)
            q = f"What is {a} squared?"
            ans = f"{a} squared means {a} × {a} = {a * a}. The answer is {a * a}."
        out.append((q, ans))
    return out


def unit_examples(rng: random.Random, n: int) -> list[tuple[str, str]]:
    rules = load_source("unit_rules")
    out = []
    i = 0
    while len(out) < n:
        slot = i % (len(rules) + 2)
        i += 1
        if slot == len(rules):
            c = rng.randrange(-20, 41, 5)
            m = Decimal(c) * Decimal("1.8")
            f = m + 32
            q = f"What is {c} °C in Fahrenheit?"
            ans = (
                f"To convert Celsius to Fahrenheit, multiply by 1.8 and add 32: {c} × 1.8 = {_dec(m)} and "
                f"{_dec(m)} + 32 = {_dec(f)}. So {c} °C is {_dec(f)} °F."
            )
        elif slot == len(rules) + 1:
            k = rng.randint(-4, 14)
            fahr = 32 + 9 * k
            c = Decimal(fahr - 32) / Decimal("1.8")
            q = f"What is {fahr} °F in Celsius?"
            ans = (
                f"To convert Fahrenheit to Celsius, subtract 32 and divide by 1.8: {fahr} - 32 = {fahr - 32} and "
                f"{fahr - 32} ÷ 1.8 = {_dec(c)}. So {fahr} °F is {_dec(c)} °C."
            )
        else:
            rule = rules[slot]
            src, dst, factor, op, fact = rule["from"], rule["to"], Decimal(rule["factor"]), rule["op"], rule["fact"]
            v = rng.choice(range(rule["min"], rule["max"] + 1, rule["step"]))
            exact = Decimal(v) * factor if op == "×" else Decimal(v) / factor
            q = rng.choice([f"How many {dst} are in {v} {src}?", f"Convert {v} {src} to {dst}."])
            if exact == exact.quantize(Decimal("0.0001")):
                ans = f"{fact}, so {v} {src} is {v} {op} {_dec(factor)} = {_dec(exact)} {dst}."
            else:
                ans = f"{fact}, so {v} {src} is {v} {op} {_dec(factor)} ≈ {_round2(exact)} {dst}."
        out.append((q, ans))
    return out


def counting_examples(rng: random.Random, n: int) -> list[tuple[str, str]]:
    words_table, sentences = load_source("words"), load_source("sentences")
    out = []
    i = 0
    while len(out) < n:
        kind = i % 4
        i += 1
        if kind == 0:
            w = rng.choice(words_table)
            letter = rng.choice(sorted(set(w)))
            k = w.count(letter)
            times = "once" if k == 1 else f"{k} times"
            q = f'How many times does the letter "{letter}" appear in "{w}"?'
            ans = f'The letter "{letter}" appears {times} in "{w}": {_spell(w)}.'
        elif kind == 1:
            w = rng.choice(words_table)
            q = f'How many letters are in the word "{w}"?'
            ans = f'The word "{w}" has {len(w)} letters: {_spell(w)}.'
        elif kind == 2:
            s = rng.choice(sentences)
            words = s.split()
            q = f'How many words are in the sentence "{s}"?'
            ans = f"The sentence has {len(words)} words: {', '.join(words)}."
        else:
            w = rng.choice([w for w in words_table if any(ch in "aeiou" for ch in w)])
            vowels = [ch for ch in w if ch in "aeiou"]
            q = f'How many vowels are in the word "{w}"?'
            ans = f'The word "{w}" has {len(vowels)} vowels: {", ".join(vowels)}.'
        out.append((q, ans))
    return out


def list_examples(rng: random.Random, n: int) -> list[tuple[str, str]]:
    list_words = load_source("list_words")
    out = []
    i = 0
    while len(out) < n:
        kind = i % 6
        i += 1
        nums = _nums(rng, rng.randint(4, 7))
        words = rng.sample(list_words, rng.randint(4, 6))
        if kind == 0:
            q = f"Sort these numbers from smallest to largest: {_join_list(nums)}."
            ans = f"Here they are from smallest to largest: {_join_list(sorted(nums))}."
        elif kind == 1:
            q = f"Sort these numbers from largest to smallest: {_join_list(nums)}."
            ans = f"Here they are from largest to smallest: {_join_list(sorted(nums, reverse=True))}."
        elif kind == 2:
            q = f"Put these words in alphabetical order: {_join_list(words)}."
            ans = f"Here they are in alphabetical order: {_join_list(sorted(words))}."
        elif kind == 3:
            q = f"Reverse this list: {_join_list(words)}."
            ans = f"Here is the list reversed: {_join_list(words[::-1])}."
        elif kind == 4:
            which = rng.choice(["largest", "smallest"])
            val = max(nums) if which == "largest" else min(nums)
            q = f"What is the {which} number in this list: {_join_list(nums)}?"
            ans = f"The {which} number in the list is {val}."
        else:
            base = nums[:4]
            dup = base + [rng.choice(base), rng.choice(base)]
            rng.shuffle(dup)
            uniq = list(dict.fromkeys(dup))
            q = f"Remove the duplicates from this list and keep the original order: {_join_list(dup)}."
            ans = f"Here is the list without duplicates: {_join_list(uniq)}."
        out.append((q, ans))
    return out


def capital_examples(rng: random.Random, n: int) -> list[tuple[str, str]]:
    capitals = list(load_source("capitals").items())
    out = []
    forward = ["What is the capital of {c}?", "Which city is the capital of {c}?", "What's the capital city of {c}?"]
    for country, city in capitals:
        q = rng.choice(forward).format(c=country)
        out.append((q, f"The capital of {country} is {city}."))
    for country, city in rng.sample(capitals, min(len(capitals), max(0, n - len(capitals)))):
        out.append((f"{city} is the capital of which country?", f"{city} is the capital of {country}."))
    return out[:n]


def date_examples(rng: random.Random, n: int) -> list[tuple[str, str]]:
    out = []
    start, span = dt.date(2020, 1, 1), 365 * 12
    i = 0
    while len(out) < n:
        kind = i % 3
        i += 1
        d1 = start + dt.timedelta(days=rng.randrange(span))
        if kind == 0:
            d2 = d1 + dt.timedelta(days=rng.randint(2, 400))
            days = (d2 - d1).days
            q = f"How many days are there from {_fmt_date(d1)} to {_fmt_date(d2)}?"
            ans = f"There are {days} days from {_fmt_date(d1)} to {_fmt_date(d2)}."
        elif kind == 1:
            q = f"What day of the week is {_fmt_date(d1)}?"
            ans = f"{_fmt_date(d1)} is a {d1:%A}."
        else:
            k = rng.randint(2, 120)
            d2 = d1 + dt.timedelta(days=k)
            q = f"What date is {k} days after {_fmt_date(d1)}?"
            ans = f"{k} days after {_fmt_date(d1)} is {_fmt_date(d2)}."
        out.append((q, ans))
    return out


def python_examples(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """Functions from ``python_functions.json`` run on drawn arguments, then ``python_expressions.jsonl``."""
    functions, expressions = load_source("python_functions"), load_source("python_expressions")
    words_table, list_words, palindromes = load_source("words"), load_source("list_words"), load_source("palindromes")
    sentences = load_source("sentences")
    out = []
    for function in functions:
        code = "\n".join(function["code"])
        a, b, c, d = _nums(rng, 4, 1, 50)
        w, t, p = rng.choice(words_table), rng.randrange(-10, 41, 5), rng.choice(palindromes)
        f, s = rng.randint(3, 7), rng.choice(sentences)
        call = function["example"].format(a=a, b=b, c=c, d=d, w=w, t=t, p=p, f=f, s=s)
        env: dict = {}
        exec(code, env)  # noqa: S102 - the project's own snippet, reviewed like code
        result = eval(call, env)  # noqa: S307 - idem
        q = f"Write a Python function called `{function['name']}` that {function['description']}."
        ans = f"Here is a simple version:\n\n```python\n{code}\n```\n\nFor example, `{call}` returns `{result!r}`."
        out.append((q, ans))
    i = 0
    while len(out) < n:
        expression = expressions[i % len(expressions)]
        i += 1
        nums = _nums(rng, rng.randint(3, 5))
        words = rng.sample(list_words, 3)
        word = rng.choice(words_table)
        letter, big, small = rng.choice(sorted(set(word))), rng.randint(20, 200), rng.randint(3, 7)
        fills = dict(nums=nums, words=words, word=word, letter=letter, n=big, small=small, first=nums[0])
        expr = expression["expression"].format(**fills)
        why = expression["explanation"]
        result = eval(expr, {})  # noqa: S307 - the project's own expression, reviewed like code
        q = rng.choice([f"What does `{expr}` return in Python?", f"In Python, what is the result of `{expr}`?"])
        out.append((q, f"`{expr}` returns `{result!r}`. {why}."))
    assert len(out) >= len(functions)
    return out[:n]


# ---------------------------------------------------------------------------------------------------------------
# Open-ended prompts for candidate generation and PPO (answers differ in helpfulness, concision and politeness).
# ---------------------------------------------------------------------------------------------------------------


def prompt_rows() -> list[tuple[str, str]]:
    """(category, prompt text) in a fixed order: hand-written first, then templated, in the order of the files."""
    rows = [(row["category"], row["prompt"]) for row in load_source("prompts_handwritten")]
    for item in load_source("prompt_templates"):
        rows.extend((item["category"], item["template"].format(x=x)) for x in item["fills"])
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Assembly.
# ---------------------------------------------------------------------------------------------------------------

# category -> (generator, number of examples)
TEMPLATED = {
    "arithmetic": (arithmetic_examples, 100),
    "unit_conversion": (unit_examples, 70),
    "counting": (counting_examples, 60),
    "lists": (list_examples, 60),
    "capitals": (capital_examples, 60),
    "dates": (date_examples, 50),
    "python": (python_examples, 49),
}


def _rng(name: str) -> random.Random:
    """One independent, reproducible stream per family (string seeds are hashed with SHA-512, not hash())."""
    return random.Random(f"{SEED}-{name}")


def _unique(pairs: list[tuple[str, str]], n: int, seen: set[str]) -> list[tuple[str, str]]:
    out = []
    for q, a in pairs:
        if q not in seen:
            seen.add(q)
            out.append((q, a))
        if len(out) == n:
            break
    if len(out) < n:
        raise RuntimeError(f"only {len(out)} unique examples, wanted {n}")
    return out


def _test_indices(n: int, fraction: float, rng: random.Random) -> set[int]:
    idx = list(range(n))
    rng.shuffle(idx)
    return set(idx[: round(n * fraction)])


def build_instructions() -> list[dict]:
    by_category: dict[str, list[tuple[str, str]]] = {}
    seen: set[str] = set()
    for category, pairs in qa_pairs().items():
        by_category[category] = _unique(pairs, len(pairs), seen)
    for category, (generate, n) in TEMPLATED.items():
        by_category[category] = _unique(generate(_rng(category), n + 60), n, seen)
    rows = []
    for category, pairs in by_category.items():
        test = _test_indices(len(pairs), INSTRUCTIONS_TEST_FRACTION, _rng(f"split-{category}"))
        for i, (q, a) in enumerate(pairs):
            rows.append(
                {
                    "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                    "category": category,
                    "split": "test" if i in test else "train",
                }
            )
    _rng("order").shuffle(rows)
    return rows


def build_quotes() -> list[dict]:
    return [{"quote": row["quote"], "author": row["author"], "tags": row["tags"]} for row in load_source("quotes")]


def build_prompts() -> list[dict]:
    """Training and test prompts split by category, then the hand-written held-out prompts, all in the test split
    (written apart from the others: no held-out prompt shares a topic with a training one)."""
    rows = prompt_rows()
    by_category: dict[str, list[int]] = {}
    for i, (category, _) in enumerate(rows):
        by_category.setdefault(category, []).append(i)
    test: set[int] = set()
    for category, members in by_category.items():
        picked = _test_indices(len(members), PROMPTS_TEST_FRACTION, _rng(f"prompt-split-{category}"))
        test.update(members[j] for j in picked)
    held_out = [(row["category"], row["prompt"]) for row in load_source("prompts_heldout")]
    test.update(range(len(rows), len(rows) + len(held_out)))
    return [
        {
            "prompt_id": f"p{i + 1:04d}",
            "prompt": [{"role": "user", "content": text}],
            "category": category,
            "split": "test" if i in test else "train",
        }
        for i, (category, text) in enumerate(rows + held_out)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    path.write_bytes(text.encode("utf-8"))


def build(out: Path) -> dict[str, int]:
    """Write every bundled file into ``out``; returns the row count of each file."""
    out.mkdir(parents=True, exist_ok=True)
    from workbench.data.build_preferences import build_preferences

    prompts = build_prompts()
    files = {
        "instructions.jsonl": build_instructions(),
        "quotes.jsonl": build_quotes(),
        "prompts.jsonl": prompts,
        # the hand-written held-out prompts stay out of every training set, the bundled preference pairs included
        "preferences.jsonl": build_preferences(prompts[: len(prompt_rows())]),
    }
    for name, rows in files.items():
        write_jsonl(out / name, rows)
    return {name: len(rows) for name, rows in files.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    for name, count in build(args.out).items():
        print(f"{args.out / name}: {count} rows")


if __name__ == "__main__":
    main()
