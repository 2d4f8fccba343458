"""Padding-free SFT batches that still honour `max_length`.

With `padding_free: true`, TRL's collator concatenates a batch's examples into one row with restarting
`position_ids` and no pad tokens; transformers then builds a block-diagonal causal mask from those positions (for
sdpa and eager attention as for flash attention, whenever no KV cache is passed, as in training), so no token attends
across examples. On the 2-core CPU the embedded default's padded batches of 4 are 16-19% padding; without it,
`workbench sft` ran 1.29x (float32 base) and 1.09x (4-bit) the non-padding tokens/s of its padded batches, 1.25x and
1.27x a plain TRL SFTTrainer script (bench/results/sft_throughput-cpu-2core.json).

TRL 1.16 refuses `padding_free` together with `max_length` unless packing ("max_length is not enforced"), since its
padding-free collator cuts nothing. Its dataset preparation does cut every row to `max_length` (before any collator),
so this mixin hides `max_length` from that one check and gives it back for the preparation: rows are truncated
exactly as without `padding_free`, and the recipe keeps one meaning for `max_length`.
"""

from __future__ import annotations


class PaddingFreeKeepsMaxLength:
    """SFTTrainer mixin: `padding_free` (without packing) truncates rows to `max_length` like padded batches."""

    def __init__(self, *args, **kwargs):
        config = kwargs["args"]
        self._padding_free_max_length = None
        if config.padding_free and not config.packing and config.max_length is not None:
            self._padding_free_max_length, config.max_length = config.max_length, None
        try:
            super().__init__(*args, **kwargs)
        finally:
            if self._padding_free_max_length is not None:
                config.max_length = self._padding_free_max_length

    def _prepare_dataset(self, dataset, processing_class, args, *rest, **kwargs):
        if self._padding_free_max_length is None:
            return super()._prepare_dataset(dataset, processing_class, args, *rest, **kwargs)
        hidden, args.max_length = args.max_length, self._padding_free_max_length
        try:
            return super()._prepare_dataset(dataset, processing_class, args, *rest, **kwargs)
        finally:
            args.max_length = hidden
