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
    adapter: str | None = field(default=None, metadata={"help": "Adapter folder; its manifest names the base."})
    prompt: str | None = field(default=None, metadata={"help": "Answer this one message and exit."})
    system_prompt: str | None = field(default=None, metadata={"help": "System message opening the conversation."})
    seed: int = field(default=0, metadata={"help": "Random seed for sampling."})


def answer(model, tokenizer, messages: list[dict], sampling) -> str:
    import torch

    from workbench.modeling.tokens import encode_prompts

    input_ids = torch.tensor(encode_prompts(tokenizer, [messages]), device=model.device)
    with torch.inference_mode():
        output = sampling.generate(model, tokenizer, input_ids, torch.ones_like(input_ids))
    return tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True).strip()


def main(argv: list[str]) -> int:
    from workbench.modeling.arguments import ModelArguments
    from workbench.modeling.generation import Sampling
    from workbench.recipe import RecipeParser

    parser = RecipeParser(
        [ChatArguments, Sampling, ModelArguments],
        "workbench chat",
        dict(max_new_tokens=256, temperature=0.0),
        model_groups=("base", "device", "precision"),
        unread_why="chat trains nothing",
    )
    args, sampling, model_args = parser.parse(argv)
    sampling.check()

    from transformers import set_seed

    from workbench.modeling import adapters, loading

    set_seed(args.seed)
    if args.adapter:
        model, tokenizer, manifest = adapters.load_with_adapter(args.adapter, model_args, task_type="CAUSAL_LM")
        base = manifest.base_model["name_or_path"]
    else:
        model, tokenizer = loading.load_model(model_args), loading.load_tokenizer(model_args)
        base = model.workbench_base.name_or_path
    model.eval()
    if tokenizer.chat_template is None:
        raise UserError(f"{base} has no chat template; chat needs an instruction-tuned model")
    opening = [{"role": "system", "content": args.system_prompt}] if args.system_prompt else []

    if args.prompt is not None:
        print(answer(model, tokenizer, [*opening, {"role": "user", "content": args.prompt}], sampling))
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
        reply = answer(model, tokenizer, messages, sampling)
        messages.append({"role": "assistant", "content": reply})
        print(reply, flush=True)
    return 0
