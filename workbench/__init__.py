"""Alignment workbench: QLoRA SFT, human rankings in Argilla, a reward model and single-base PPO."""

__version__ = "0.1.0"
