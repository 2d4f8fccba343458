"""`workbench reward score --adapter DIR --input FILE --output scored.jsonl`: a reward adapter scores completions.

Input rows (JSONL/JSON/Parquet/CSV, a `save_to_disk` folder or a hub id), by columns:
  prompt + completions  candidates (`workbench generate`): adds `scores` (one per completion) and `ranking`
                        (completion indices, best first) — what `label push` shows labelers as a suggestion;
  prompt + completion   adds `score`;
  chosen + rejected     preference pairs (prompt optional): adds `score_chosen`, `score_rejected`, and prints
                        pairwise accuracy, mean margin and calibration.
Every row also gets `reward_model` (the adapter folder). The output is written atomically. Texts are tokenized as
TRL's RewardTrainer tokenizes them for training (the chat template over prompt + completion).

Also home of the held-out metrics the reward stage reports (`evaluate_pairs`, `pairwise_metrics`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

from workbench.errors import UserError


def encode(tokenizer, prompt, completion) -> list[int]:
    """Token ids of prompt + completion, exactly as TRL's RewardTrainer tokenizes prompt + chosen."""
    if isinstance(completion, str) and isinstance(prompt, list):
        completion = [{"role": "assistant", "content": completion}]
    if isinstance(completion, list):
        messages = list(prompt or []) + list(completion)
        return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    text = (prompt or "") + completion
    if not text.endswith(tokenizer.eos_token):  # TRL appends EOS to non-conversational texts
        text += tokenizer.eos_token
    return list(tokenizer(text=text)["input_ids"])


def pad_batch(sequences: list[list[int]], pad_token_id: int, device=None):
    """Right-padded input_ids and attention_mask, as TRL's preference collator pads."""
    import torch

    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return input_ids.to(device), attention_mask.to(device)


def score_sequences(model, sequences: list[list[int]], pad_token_id: int, batch_size: int = 8) -> list[float]:
    """Scores of a sequence-classification reward model for token sequences, batched by similar length."""
    import torch

    device = next(model.parameters()).device
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    scores = [0.0] * len(sequences)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            input_ids, attention_mask = pad_batch([sequences[i] for i in chunk], pad_token_id, device)
            logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
            for index, value in zip(chunk, logits.squeeze(-1).float().tolist()):
                scores[index] = value
    model.train(was_training)
    return scores


def pairwise_metrics(margins: list[float], bins: int = 10) -> dict:
    """Accuracy, mean margin and calibration of pairwise preferences from margins (score_chosen - score_rejected).

    The model's P(chosen preferred) is sigmoid(margin). It predicts the higher-scored answer with confidence
    sigmoid(|margin|) in [0.5, 1]; pairs are binned by that confidence and each bin reports how often the prediction
    was right. The expected calibration error is the pair-weighted mean gap between confidence and accuracy.
    `accuracy_stderr` is the binomial standard error; pairs sharing a prompt are correlated, so it is a lower bound.
    """
    if not margins:
        return {"pairs": 0}
    n = len(margins)
    correct = [m > 0 for m in margins]  # a tie counts as wrong, as in TRL's accuracy
    confidence = [1 / (1 + math.exp(-abs(m))) for m in margins]
    table, ece = [], 0.0
    for b in range(bins):
        lower, upper = 0.5 + 0.5 * b / bins, 0.5 + 0.5 * (b + 1) / bins
        members = [i for i, c in enumerate(confidence) if lower <= c < upper or (b == bins - 1 and c >= upper)]
        if not members:
            table.append({"lower": lower, "upper": upper, "pairs": 0, "confidence": None, "accuracy": None})
            continue
        mean_conf = sum(confidence[i] for i in members) / len(members)
        accuracy = sum(correct[i] for i in members) / len(members)
        ece += len(members) / n * abs(accuracy - mean_conf)
        table.append(
            {"lower": lower, "upper": upper, "pairs": len(members), "confidence": mean_conf, "accuracy": accuracy}
        )
    overall = sum(correct) / n
    return {
        "pairs": n,
        "accuracy": overall,
        "accuracy_stderr": math.sqrt(overall * (1 - overall) / n),
        "mean_margin": sum(margins) / n,
        "mean_confidence": sum(confidence) / n,
        "ece": ece,
        "calibration": table,
    }


def evaluate_pairs(trainer, dataset, bins: int) -> dict:
    """Pairwise accuracy, mean margin and calibration of the trainer's model on a tokenized preference dataset."""
    pad = trainer.processing_class.pad_token_id
    batch = trainer.args.per_device_eval_batch_size
    chosen = score_sequences(trainer.model, dataset["chosen_ids"], pad, batch)
    rejected = score_sequences(trainer.model, dataset["rejected_ids"], pad, batch)
    return pairwise_metrics([c - r for c, r in zip(chosen, rejected)], bins)


def log_metrics(run, metrics: dict) -> None:
    """Final metrics into the W&B run's summary, the calibration bins as a table."""
    if run is None:
        return
    import wandb

    run.summary.update({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    columns = ["lower", "upper", "pairs", "confidence", "accuracy"]
    rows = [[b[c] for c in columns] for b in metrics.get("eval_calibration", [])]
    run.log({"eval/calibration": wandb.Table(columns=columns, data=rows)})


def load_scorer(adapter_dir, base_model: str | None = None, device_map: str | None = "auto"):
    """The reward stage's own model: the manifest's base (same quantization) with a scalar head, plus the adapter."""
    from workbench.modeling import adapters, loading

    manifest = adapters.read_manifest(adapter_dir)
    if manifest.task_type != "SEQ_CLS":
        raise UserError(f"{adapter_dir} is a {manifest.task_type} adapter ({manifest.stage}), not a reward adapter")
    base = base_model or manifest.base_model["name_or_path"]
    quant = loading.Quantization(**manifest.base_model["quantization"])
    tokenizer = loading.load_tokenizer(base, manifest.base_model.get("revision"))
    model = loading.load_model(
        base,
        quant=quant,
        head="scalar",
        revision=manifest.base_model.get("revision"),
        device_map=device_map,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = adapters.attach(model, "reward", path=adapter_dir, trainable=False)
    model.eval()
    return model, tokenizer, manifest


def _jobs(rows: list[dict], columns: list[str], where: str):
    """(row, field, index) of every text to score, and the token-free description of the input kind."""
    if "completions" in columns and "prompt" in columns:
        return "candidates", [(r, "scores", k) for r, row in enumerate(rows) for k in range(len(row["completions"]))]
    if "completion" in columns and "prompt" in columns:
        return "completions", [(r, "score", None) for r in range(len(rows))]
    if "chosen" in columns and "rejected" in columns:
        return "preferences", [(r, f, None) for r in range(len(rows)) for f in ("score_chosen", "score_rejected")]
    raise UserError(
        f"{where}: expected columns prompt+completions (candidates), prompt+completion, or chosen+rejected; "
        f"the data has {columns}"
    )


def _text(row: dict, field: str, index):
    if field == "scores":
        return row.get("prompt"), row["completions"][index]
    if field == "score":
        return row.get("prompt"), row["completion"]
    return row.get("prompt"), row["chosen" if field == "score_chosen" else "rejected"]


def write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    os.replace(temporary, path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="workbench reward score", description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", required=True, help="reward adapter folder (output_dir/adapter)")
    parser.add_argument("--input", required=True, help="candidates, prompt/completion or preference rows")
    parser.add_argument("--output", required=True, help="where to write the scored rows (.jsonl)")
    parser.add_argument("--batch_size", type=int, default=8, help="sequences per forward pass")
    parser.add_argument("--split", default="train", help="split to read from a dataset folder or hub id")
    parser.add_argument("--base_model", default=None, help="base checkpoint (default: the one in the manifest)")
    parser.add_argument("--device_map", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--calibration_bins", type=int, default=10, help="confidence bins for preference rows")
    args = parser.parse_args(argv)
    output = Path(args.output)
    if output.suffix != ".jsonl":
        raise UserError(f"--output {output} must be a .jsonl file")
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be >= 1; got {args.batch_size}")

    from workbench.data.mixture import DatasetSpec, load_raw

    where = f"--input {args.input}"
    dataset = load_raw(DatasetSpec(path=args.input, split=args.split), where)
    rows = dataset.to_list()
    kind, jobs = _jobs(rows, dataset.column_names, where)
    model, tokenizer, _ = load_scorer(args.adapter, args.base_model, args.device_map)

    started = time.perf_counter()
    sequences = [encode(tokenizer, *_text(rows[r], field, k)) for r, field, k in jobs]
    scores = score_sequences(model, sequences, tokenizer.pad_token_id, args.batch_size)
    for (r, field, k), value in zip(jobs, scores):
        if field == "scores":
            rows[r].setdefault("scores", [None] * len(rows[r]["completions"]))[k] = value
        else:
            rows[r][field] = value
    for row in rows:
        if kind == "candidates":
            row["ranking"] = sorted(range(len(row["scores"])), key=lambda i: -row["scores"][i])
        row["reward_model"] = str(Path(args.adapter).resolve())
    write_jsonl_atomic(output, rows)

    summary = {"rows": len(rows), "kind": kind, "sequences": len(sequences), "seconds": time.perf_counter() - started}
    if kind == "preferences":
        metrics = pairwise_metrics(
            [row["score_chosen"] - row["score_rejected"] for row in rows], args.calibration_bins
        )
        summary.update({k: v for k, v in metrics.items() if k != "calibration"})
    print(f"workbench reward score: wrote {output}")
    print(json.dumps(summary, indent=2))
    return 0
