"""`workbench reward average --adapter A --adapter B [...] --output DIR`: one reward adapter, the members' weights
averaged (workbench/modeling/reward_averaging.py): RL and eval then score with one forward pass, where an ensemble
(`workbench reward score --adapter A --adapter B`) takes one per member. The members must be LoRA reward adapters of
the same base; the output is an ordinary reward adapter folder (its manifest lists the members)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from workbench.errors import UserError


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="workbench reward average", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--adapter", required=True, action="append", help="a member: reward adapter folder; give 2 or more"
    )
    parser.add_argument("--output", required=True, help="the averaged adapter's folder")
    parser.add_argument("--device_map", default="cpu", help="where to load the base while averaging: cpu or cuda")
    parser.add_argument("--overwrite", action="store_true", help="replace --output when it exists already")
    args = parser.parse_args(argv)
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise UserError(f"--output {output}: expected a new folder, found one already written; pass --overwrite")
    if len(args.adapter) < 2:
        raise UserError(f"--adapter: expected 2 or more reward adapters to average; got {len(args.adapter)}")
    if len({Path(a).resolve() for a in args.adapter}) < len(args.adapter):
        raise UserError(f"--adapter: each member once; got {args.adapter}")

    from workbench.modeling.arguments import ModelArguments
    from workbench.modeling.reward_averaging import average_reward_adapters

    written = average_reward_adapters(args.adapter, output, ModelArguments(device_map=args.device_map))
    print(json.dumps({"adapter": str(written), "members": [str(Path(a).resolve()) for a in args.adapter]}))
    return 0
