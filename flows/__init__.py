"""Prefect flows: thin, they compose tasks (the wave and rollback flows come with their issues)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect.settings import temporary_settings


@contextmanager
def without_heartbeats() -> Iterator[None]:
    """The flow runs this thread starts inside send no heartbeat events.

    Prefect's flow engine sends a flow run's heartbeat every 180 s from a thread that sleeps a second at a time,
    and joins that thread when the run ends: each flow run's end waited for it, half a second on average and up to
    one (a wave has two or three flow runs). Nothing reads these heartbeats: the server's triggers service, the one
    that could mark a silent run Crashed, is off (ikomm.server.SERVER_SETTINGS), and the runs of a killed wave are
    marked Crashed by its next run (flows.wave.mark_orphans). The setting cannot be unset from the environment, so
    it is unset here, in this thread's settings context.
    """
    with temporary_settings(updates={"flows.heartbeat_frequency": None}):
        yield
