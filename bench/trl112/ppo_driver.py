"""TRL 1.12.0's `trl.experimental.ppo.PPOTrainer` timed per PPO step. Runs in its own venv (made by
bench/ppo_step_time.py: TRL 1.13 deleted PPO), so it imports nothing from the workbench.

    <venv>/bin/python bench/trl112/ppo_driver.py --spec spec.json --out result.json

spec.json (written by bench/ppo_step_time.py): model (a local checkpoint), prompts (token ids, chat template with
the generation prompt: TRL takes tokenized input only), steps, batch_size, ppo_epochs, response_length, temperature,
learning_rate, kl_coef, kl_estimator, lora_r, lora_alpha, seed. As TRL is documented to be used with PEFT: the policy
is the base with a LoRA adapter (the reference is the same model with the adapter disabled), the reward and value
models are separately loaded sequence-classification copies of the base (TRL trains the value model in full).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    spec = json.loads(Path(args.spec).read_text())

    import torch
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    torch.manual_seed(spec["seed"])
    tokenizer = AutoTokenizer.from_pretrained(spec["model"], padding_side="left")
    dtype = getattr(torch, spec.get("dtype", "float32"))
    policy = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=dtype)
    reward = AutoModelForSequenceClassification.from_pretrained(spec["model"], num_labels=1, dtype=dtype)
    value = AutoModelForSequenceClassification.from_pretrained(spec["model"], num_labels=1, dtype=dtype)
    for model in (reward, value):
        model.config.pad_token_id = tokenizer.pad_token_id
    dataset = Dataset.from_dict({"input_ids": spec["prompts"]})

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.marks = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.marks.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append(time.perf_counter())

    timer = StepTimes()
    with tempfile.TemporaryDirectory() as scratch:
        config = PPOConfig(
            output_dir=scratch,
            per_device_train_batch_size=spec["batch_size"],
            gradient_accumulation_steps=1,
            num_mini_batches=1,
            num_ppo_epochs=spec["ppo_epochs"],
            total_episodes=spec["batch_size"] * spec["steps"],
            local_rollout_forward_batch_size=spec["batch_size"],
            response_length=spec["response_length"],
            temperature=spec["temperature"],
            stop_token=None,  # every response runs to response_length, as the workbench side is set up to
            learning_rate=spec["learning_rate"],
            kl_coef=spec["kl_coef"],
            kl_estimator=spec["kl_estimator"],
            num_sample_generations=0,
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            seed=spec["seed"],
            use_cpu=not torch.cuda.is_available(),
            bf16=False,
            fp16=False,
        )
        peft_config = LoraConfig(
            task_type="CAUSAL_LM", r=spec["lora_r"], lora_alpha=spec["lora_alpha"], target_modules="all-linear"
        )
        trainer = PPOTrainer(
            args=config,
            processing_class=tokenizer,
            model=policy,
            ref_model=None,
            reward_model=reward,
            train_dataset=dataset,
            value_model=value,
            peft_config=peft_config,
            callbacks=[timer],
        )
        trainer.train()
    step_seconds = [b - a for a, b in zip(timer.marks, timer.marks[1:])]
    result = {
        "trl": trl.__version__,
        "torch": torch.__version__,
        "step_seconds": step_seconds,
        "trained_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
