"""The policy as the stages sample it on the CPU, for the sampling benchmarks (bench/shared_prefill.py,
bench/sampler_speed.py): the float32 base with a fresh LoRA (r 16, all linear layers) that `Sampling.generate` folds
in for each call, its left-padding tokenizer, and the bundled training prompts."""

from __future__ import annotations


def sampling_policy(model_name: str) -> tuple:
    """(model, tokenizer, prompts): the PeftModel in eval mode, the tokenizer, the training prompts' chats."""
    from workbench.data.prompts import load_prompts
    from workbench.modeling import adapters
    from workbench.modeling.arguments import ModelArguments
    from workbench.modeling.loading import load_model, load_tokenizer

    args = ModelArguments(model_name_or_path=model_name, load_in_4bit=False, dtype="float32")
    tokenizer = load_tokenizer(args, padding_side="left")
    model = adapters.attach(load_model(args).eval(), "policy", config=adapters.get_peft_config(args)).eval()
    prompts = [row["prompt"] for row in load_prompts("bundled:prompts", where={"split": "train"})]
    return model, tokenizer, prompts
