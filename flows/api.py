"""Prefect's REST API over HTTP, for the calls the typed client has no method for, with Prefect's own retries.

Prefect's API answers 503 when SQLite refuses a write: a request whose transaction read first (the deployment,
to create a flow run from it) cannot take the write lock once another writer (a served runner's poll, the event
persister, the task-run recorder) has committed since its read began, and SQLite says so at once, without waiting
out the busy timeout. Under load the server sometimes drops the connection instead. Prefect's own client retries
429, 502 and 503 and dropped connections with exponential backoff and jitter; every HTTP call this project and its
tests make to the API goes through that client (`api_session`), never bare httpx.
"""

from __future__ import annotations

import os
from typing import Any

from prefect.client.base import PrefectHttpxSyncClient
from prefect.settings import PREFECT_API_AUTH_STRING

from ikomm import server
from ikomm.access import basic


def api_session(
    api_url: str | None = None, timeout: float = 30.0, credential: str | None = None
) -> PrefectHttpxSyncClient:
    """An HTTP client on Prefect's API (the local server's by default) that retries as Prefect's client does.

    Paths are relative to the API (`session.post("/flow_runs/filter", json=...)`); an error answer is returned,
    not raised, once the retries are spent, so callers can read its status and text. credential ("name:password"):
    PREFECT_API_AUTH_STRING by default, as Prefect's own client sends it.
    """
    # the environment first: Prefect reads its settings once, when it is imported
    credential = credential or os.environ.get("PREFECT_API_AUTH_STRING") or PREFECT_API_AUTH_STRING.value()
    return PrefectHttpxSyncClient(
        base_url=(api_url or server.api_url()).rstrip("/") + "/",
        timeout=timeout,
        raise_on_all_errors=False,
        headers={"Authorization": basic(credential)} if credential else None,
    )


def api_json(api_url: str | None, path: str, body: object = None, credential: str | None = None) -> Any:
    """The API's JSON answer to a POST of body to path (a GET when body is None); raises on an error answer once
    the retries are spent."""
    with api_session(api_url, credential=credential) as session:
        answer = session.get(path) if body is None else session.post(path, json=body)
        answer.raise_for_status()
        return answer.json()
