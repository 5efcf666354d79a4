"""What keeps the orchestration cheap, without servers: users' stories off the console, the profile's summary."""

from __future__ import annotations

import logging
from pathlib import Path

from bench.profile import package, summary
from tasks.user import StoriesNotPrinted


def record(name: str, level: int) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, "a user's story", None, None)


def test_a_users_story_stays_off_the_console_but_warnings_and_flow_runs_do_not() -> None:
    quiet = StoriesNotPrinted()
    assert not quiet.filter(record("prefect.task_runs", logging.INFO))  # the story, "Finished in state"
    assert quiet.filter(record("prefect.task_runs", logging.WARNING))  # a held or failed user
    assert quiet.filter(record("prefect.flow_runs", logging.INFO))  # the wave's own lines
    assert quiet.filter(record("ikomm.wave", logging.INFO))


def test_the_profile_summary_counts_self_samples_by_package_and_the_projects_functions(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(
        "thread (0x1);run_user (ikomm/migration.py:10);set_user (ikomm/ledger.py:5);"
        "execute (sqlalchemy/engine/base.py:1) 3\n"
        "thread (0x1);run_user (ikomm/migration.py:10);read_message (paramiko/packet.py:2) 1\n"
    )
    assert package("sqlalchemy/engine/base.py") == "sqlalchemy"
    assert package("/work/main/ikomm/ledger.py") == "ikomm"
    text = summary(raw)
    assert "4 samples" in text
    assert "75.0 %  sqlalchemy" in text and "25.0 %  paramiko" in text
    assert "100.0 %  ikomm.migration.run_user" in text and "75.0 %  ikomm.ledger.set_user" in text
