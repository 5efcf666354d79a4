"""The campaign's status as a Prefect artifact, next to the waves' own."""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact

KEY = "campaign-status"


def publish_status(markdown: str) -> None:
    """A new version of the campaign-status artifact (from a wave's end, or `ikomm campaign status --publish`)."""
    create_markdown_artifact(markdown, key=KEY, description="Every user of the campaign, accounted for")
