"""Workers' signs of life: each renews its row while it runs, so operators can see which are alive."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from models.storage.tables import Worker, utc_now

# A worker unseen this long is gone for good; its row goes, and with it its series in the metrics.
FORGET_AFTER = timedelta(days=1)


def record_heartbeat(session: Session, name: str, *, hostname: str, gpus: list[dict[str, Any]]) -> None:
    """Note that worker `name` is alive now, with its GPUs' memory; forget workers long gone. Does not commit."""
    now = utc_now()
    worker = session.get(Worker, name)
    if worker is None:
        session.add(Worker(name=name, hostname=hostname, started_at=now, last_seen_at=now, gpus=gpus))
    else:
        worker.last_seen_at, worker.gpus = now, gpus
    session.execute(delete(Worker).where(Worker.last_seen_at < now - FORGET_AFTER))
