"""Which checkpoint a resume starts from."""

from __future__ import annotations

import json

from workbench.output_dir import trainer_checkpoint


def test_a_checkpoint_interrupted_by_a_kill_is_skipped(tmp_path):
    """Trainer writes trainer_state.json last: a checkpoint folder without it (kill -9 while saving, as seen in
    tests/labeling/test_watch.py: resuming from it failed with "Can't find a valid checkpoint") or with it cut short
    is not resumed from; the last complete one is, by step number, not by name order."""
    assert trainer_checkpoint(tmp_path / "missing") is None
    for step in (2, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (tmp_path / "checkpoint-11").mkdir()  # killed before any file
    (tmp_path / "checkpoint-12").mkdir()
    (tmp_path / "checkpoint-12" / "trainer_state.json").write_text('{"global_step": 1')  # killed mid-write
    (tmp_path / "checkpoint-x").mkdir()
    assert trainer_checkpoint(tmp_path) == tmp_path / "checkpoint-10"
    (tmp_path / "checkpoint-10" / "trainer_state.json").unlink()
    assert trainer_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
