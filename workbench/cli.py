"""`workbench <command>`: one table from command name to the module whose `main(argv)` runs it.

Modules are imported only when their command runs, so `workbench label ...` never imports torch.
"""

from __future__ import annotations

import importlib
import sys

from workbench.errors import UserError

COMMANDS: dict[str, tuple[str, str]] = {
    "sft": ("workbench.stages.sft", "Supervised fine-tuning (QLoRA by default) with TRL's SFTTrainer."),
    "generate": ("workbench.stages.generate", "Sample K candidate completions per prompt for ranking."),
    "dpo": ("workbench.stages.dpo", "DPO (TRL's DPOTrainer) on preference pairs; the SFT adapter is its reference."),
    "ppo": ("workbench.stages.ppo", "PPO with policy, reference, value and reward adapters on one 4-bit base."),
    "raft": ("workbench.stages.raft", "Rejection-sampling fine-tuning: SFT on the reward model's best of N answers."),
    "reward": ("workbench.stages.reward", "Reward model (QLoRA, scalar head); `reward score` scores completions."),
    "eval": ("workbench.stages.evaluate", "Compare policies on held-out prompts: reward, KL, win rates, report."),
    "pipeline": ("workbench.stages.pipeline", "The whole loop: SFT, generate, label, reward, PPO, eval, report."),
    "merge": ("workbench.stages.merge", "Merge an adapter into its base: a standalone checkpoint."),
    "chat": ("workbench.stages.chat", "Chat with a model, with or without an adapter."),
    "estimate-memory": ("workbench.stages.estimate_memory", "Memory for inference and training, from the config."),
    "label": ("labeling.cli", "Argilla: serve, stop, status, push, pull, simulate."),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    rows = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items())
    return f"usage: workbench <command> [--config RECIPE.yaml] [--key value ...]\n\ncommands:\n{rows}\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"workbench: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        if command != "label":
            from workbench.distributed import check_launch, quiet_other_processes

            check_launch()
            quiet_other_processes()
        module = importlib.import_module(COMMANDS[command][0])
        return int(module.main(rest) or 0)
    except UserError as error:
        print(f"workbench {command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"workbench {command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
