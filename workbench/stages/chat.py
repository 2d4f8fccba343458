"""`workbench chat [--adapter DIR] [--prompt TEXT]`: try a model, with or without an adapter, in the terminal.

With `--prompt` it answers once and exits (scripts, tests); otherwise it reads turns from stdin until EOF or `/exit`
(`/reset` clears the conversation).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from workbench.errors import UserError


@dataclass
class ChatArguments:
    model_name_or_path: str = field(
        default="smollm2-135m-instruct",
        metadata={"help": "Base model (path, hub id or alias); ignored with --adapter."},
    )
    adapter: str | None = field(default=None, metadata={"help": "Adapter folder; its manifest names the base."})
    prompt: str | None = field(default=None, metadata={"help": "Answer this one message and exit."})
    system_prompt: str | None = field(default=None, metadata={"help": "System message opening the conversation."})
    max_new_tokens: int = field(default=256, metadata={"help": "Longest answer, in tokens."})
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature; 0 means greedy."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold."})
    seed: int = field(default=0, metadata={"help": "Random seed for sampling."})
    load_in_4bit: bool = field(default=False, metadata={"help": "Load the base in 4-bit NF4 (as QLoRA trains it)."})
    dtype: str = field(default="bfloat16", metadata={"help": "dtype of the base (compute dtype when 4-bit)."})
    device_map: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N."})


def answer(model, tokenizer, messages: list[dict], args: ChatArguments) -> str:
    import torch

    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    sampling = dict(do_sample=True, temperature=args.temperature, top_p=args.top_p) if args.temperature > 0 else {}
    with torch.inference_mode():
        output = model.generate(
            **inputs, max_new_tokens=args.max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling
        )
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def main(argv: list[str]) -> int:
    from workbench.config import RecipeParser

    (args,) = RecipeParser([ChatArguments], "workbench chat").parse(argv)

    from transformers import set_seed

    from workbench.modeling import adapters, loading

    set_seed(args.seed)
    quant = loading.quantization_from_args(load_in_4bit=args.load_in_4bit, double_quant=True, dtype=args.dtype)
    if args.adapter:
        model, manifest = adapters.load_with_adapter(args.adapter, quant=quant, device_map=args.device_map)
        base = manifest.base_model["name_or_path"]
    else:
        base = args.model_name_or_path
        model = loading.load_model(base, quant=quant, device_map=args.device_map)
    model.eval()
    tokenizer = loading.load_tokenizer(base)
    if tokenizer.chat_template is None:
        raise UserError(f"{base} has no chat template; chat needs an instruction-tuned model")
    opening = [{"role": "system", "content": args.system_prompt}] if args.system_prompt else []

    if args.prompt is not None:
        print(answer(model, tokenizer, [*opening, {"role": "user", "content": args.prompt}], args))
        return 0
    messages = list(opening)
    print(f"chatting with {base}{' + ' + args.adapter if args.adapter else ''} (/reset, /exit)", file=sys.stderr)
    for line in sys.stdin:
        text = line.strip()
        if text in ("/exit", "/quit"):
            break
        if text == "/reset":
            messages = list(opening)
            continue
        if not text:
            continue
        messages.append({"role": "user", "content": text})
        reply = answer(model, tokenizer, messages, args)
        messages.append({"role": "assistant", "content": reply})
        print(reply, flush=True)
    return 0
