"""dvc.yaml: one ``finetune`` stage per init, and the table after all of them."""

import pytest

from tests.test_dvc_stage import sh

pytestmark = pytest.mark.slow


def test_finetune_stages_expand_per_init_and_feed_the_table(project_copy):
    repo = project_copy
    sh(repo, "git", "init", "-q")
    sh(repo, "dvc", "init", "-q")
    stages = sh(repo, "dvc", "stage", "list", "--name-only").split()
    assert {"finetune@context", "finetune@scratch", "finetune@context_rescaled", "detection_table"} <= set(stages)
    dag = sh(repo, "dvc", "dag", "--dot", "detection_table")
    for init in ("context", "scratch", "context_rescaled"):
        assert f'"finetune@{init}" -> "detection_table"' in dag
    assert '"ingest" -> "finetune@scratch"' in dag
