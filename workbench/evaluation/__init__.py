"""`workbench eval`'s library: comparing policies on held-out prompts.

metrics.py  pure functions (win rates with ties as half, summaries), no torch;
policies.py one base carrying every policy as a named adapter: answers, per-token log-ratios, rewards;
eval_report.py   report.md and PNG plots (matplotlib, Agg backend).
"""
