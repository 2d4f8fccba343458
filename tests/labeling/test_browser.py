"""The real Argilla web UI in Debian's Chromium: an annotator signs in and finds a pending record in their queue.

Needs `pip install playwright` (its own browser download is not used) and `apt-get install chromium`.
A screenshot of the annotation page is left in the system temp dir for a person to look at.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import argilla as rg
import pytest

from tests.labeling.conftest import signed_in_page

pytestmark = [pytest.mark.argilla, pytest.mark.browser]

SCREENSHOT = Path(tempfile.gettempdir()) / "workbench-argilla-annotation.png"


def _dataset(client, workspace: str, name: str, prompt: str) -> rg.Dataset:
    from labeling.users import ensure_workspace

    ensure_workspace(client, workspace)
    settings = rg.Settings(
        fields=[rg.TextField(name="prompt", client=client), rg.TextField(name="completion", client=client)],
        questions=[rg.RankingQuestion(name="rank", values=["first", "second"], client=client)],
    )
    dataset = rg.Dataset(name=name, workspace=workspace, settings=settings, client=client)
    dataset.create()
    dataset.records.log([{"prompt": prompt, "completion": "Paris."}])
    return dataset


def test_annotator_logs_in_and_sees_pending_record(argilla_server, tmp_path):
    suffix = uuid.uuid4().hex[:6]
    client = argilla_server.client()
    ours = _dataset(client, f"ui-team-{suffix}", f"ui-queue-{suffix}", f"What is the capital of France? ({suffix})")
    _dataset(client, f"ui-other-{suffix}", f"ui-hidden-{suffix}", "Not for this annotator.")
    username, password = f"ui-ann-{suffix}", "ui-annotator-pass"
    argilla_server.create_user(username, password, workspace=f"ui-team-{suffix}")

    with signed_in_page(argilla_server.api_url, tmp_path, username, password) as page:
        page.get_by_text(ours.name).first.wait_for(timeout=60_000)
        assert page.get_by_text(f"ui-hidden-{suffix}").count() == 0

        page.get_by_text(ours.name).first.click()
        page.get_by_text(f"What is the capital of France? ({suffix})").wait_for(timeout=60_000)
        page.wait_for_url("**/annotation-mode**status=pending**")
        assert page.get_by_text("1 of 1").count() == 1
        assert page.get_by_text("Pending").count() >= 1
        page.screenshot(path=str(SCREENSHOT))
