"""HTTP routes for /v1/fine_tuning/jobs: create, list, retrieve, cancel, events, checkpoints, weights."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import FileResponse
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask

from api import event_streams
from api.deps import DataLimitsDep, SessionDep, SettingsDep, StoreDep, TenantDep, get_bearer_key
from api.ranges import DOWNLOAD_RESPONSES, file_download
from api.routing import SessionReleasingRoute
from models.errors import InvalidRequest, ServiceUnavailable
from models.services import artifacts, checkpoints, dispatch, events, job_reads, job_views, jobs, quotas, tenants
from models.services.dispatch import Dispatched, IfBrokerDown
from models.settings import Settings
from models.states import JobStatus
from models.storage.database import run_read, session_scope
from models.storage.read_pool import AsyncReadPool
from models.unicode_text import unstorable_text_fault
from models.wire.checkpoints import CheckpointRead
from models.wire.common import MAX_LIST_LIMIT, ErrorResponse, ListPage, UserText
from models.wire.events import EventRead
from models.wire.jobs import JobCreate, JobPreviewRead, JobRead

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"], route_class=SessionReleasingRoute)

LimitQuery = Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)]
EventLimitQuery = Annotated[int, Query(ge=1, le=events.MAX_EVENT_PAGE_LIMIT)]

# Every response of a mutating route is built before its commit: once the change is committed,
# nothing may fail, or a client told "error" would retry a change that happened (models.services.job_views).

# Creating or resuming a job takes a slot of the tenant's max_active_jobs quota (models.services.quotas).
AT_JOB_QUOTA: dict[str, Any] = {
    "model": ErrorResponse,
    "description": "The tenant is at its max_active_jobs quota",
    "headers": {
        "Retry-After": {"description": "Seconds after which a slot may be free", "schema": {"type": "integer"}}
    },
}
# Pause, resume and cancel requests of one job are limited per minute (job_control_events_per_minute).
AT_CONTROL_LIMIT: dict[str, Any] = {
    "model": ErrorResponse,
    "description": "The job took its most pause, resume and cancel requests in the last minute",
    "headers": {
        "Retry-After": {
            "description": "Seconds until the job takes such a request again",
            "schema": {"type": "integer"},
        }
    },
}


@router.post(
    "",
    responses={
        413: {
            "model": ErrorResponse,
            "description": "The job's estimated storage does not fit the tenant's max_stored_bytes "
            "(`param`: max_stored_bytes)",
        },
        429: AT_JOB_QUOTA,
        503: {"model": ErrorResponse, "description": "The job queue is unreachable"},
    },
)
def create_fine_tuning_job(
    spec: JobCreate,
    tenant_id: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    limits: DataLimitsDep,
) -> JobRead:
    job = jobs.create_job(
        session,
        tenant_id,
        spec,
        quotas=quotas.quotas_of(session, tenant_id, settings),
        store=store,
        limits=limits,
    )
    # Read back before the commit: once the job exists, a database hiccup must not turn into a
    # retryable error, or the client's retry would create (and train) a second job.
    created = job_views.job_read(job)
    session.commit()
    sent = dispatch.send_job(session, settings.broker_url, created.id, if_broker_down=IfBrokerDown.fail_job)
    if sent is Dispatched.sent:
        return created
    session.commit()
    if sent is Dispatched.failed:
        raise ServiceUnavailable(
            f"The job queue is unreachable, so job {created.id} could not start; retry shortly.", param=None
        )
    session.refresh(job)  # a worker took it in the meantime
    return job_views.job_read(job)


@router.post("/preview")
def preview_fine_tuning_job(
    spec: JobCreate, tenant_id: TenantDep, session: SessionDep, store: StoreDep, limits: DataLimitsDep
) -> JobPreviewRead:
    """What creating a job from this body would train with, every "auto" resolved; nothing is created.

    The same checks as creation, with the same errors (quotas aside: nothing is taken).
    """
    return job_views.preview_read(spec, jobs.plan_job(session, tenant_id, spec, store=store, limits=limits))


def metadata_filter(request: Request) -> dict[str, str]:
    """The `metadata[key]=value` query parameters as a dict; 400 naming one that holds unstorable text."""
    metadata = {}
    for name, value in request.query_params.items():
        if name.startswith("metadata[") and name.endswith("]"):
            fault = unstorable_text_fault(name) or unstorable_text_fault(value)
            if fault is not None:
                raise InvalidRequest(f"{name}: {fault}", param=name)
            metadata[name.removeprefix("metadata[").removesuffix("]")] = value
    return metadata


@router.get("")
def list_fine_tuning_jobs(
    request: Request,
    tenant_id: TenantDep,
    session: SessionDep,
    after: UserText | None = None,
    limit: LimitQuery = 20,
    status: Annotated[
        list[JobStatus] | None, Query(description="Only jobs in these statuses (repeat the parameter for several).")
    ] = None,
) -> ListPage[JobRead]:
    metadata = metadata_filter(request)
    statuses = frozenset(status) if status else None
    data, has_more = job_views.fill_page(
        lambda cursor, count: jobs.list_jobs(
            session, tenant_id, after=cursor, limit=count, metadata=metadata or None, statuses=statuses
        ),
        job_views.job_read,
        after=after,
        limit=limit,
    )
    return ListPage[JobRead].of(data, has_more)


@router.get("/{job_id}", response_model=JobRead)
async def retrieve_fine_tuning_job(job_id: str, request: Request) -> Response:
    """The most polled route, kept lean: one connection and one statement for key and job.

    On PostgreSQL the statement is awaited on the event loop (models.storage.read_pool); on SQLite it runs
    in one thread hop. The key is read from the header here rather than through a dependency, and
    the body is serialized from the JobRead just built; the Response is sent as it is, where a
    returned model would be validated again. The read writes nothing: a key's stale last use is
    recorded after the answer is sent (at most once a minute per key).
    """
    key = await get_bearer_key(request.headers.get("authorization"))
    read_pool: AsyncReadPool | None = request.app.state.read_pool
    settings: Settings = request.app.state.settings
    if read_pool is not None:
        keyed = await read_pool.run(lambda connection: job_reads.read_job_for_key(connection, key, job_id))
        body, key_use_to_note = job_views.job_body(keyed.job), keyed.key_use_to_note
    else:

        def read_job(connection: Connection) -> tuple[bytes, str | None]:
            keyed = job_reads.get_job_for_key(connection, key, job_id)
            return job_views.job_body(keyed.job), keyed.key_use_to_note

        body, key_use_to_note = await anyio.to_thread.run_sync(
            run_read, settings.database_url, read_job, limiter=request.app.state.read_limiter
        )
    response = Response(body, media_type="application/json")
    if key_use_to_note is not None:
        response.background = BackgroundTask(note_key_use, settings.database_url, key_use_to_note)
    return response


def note_key_use(database_url: str, key_id: str) -> None:
    """Record a key's use after its answer went out; a database hiccup here costs only the timestamp."""
    try:
        with session_scope(database_url) as session:
            tenants.note_key_use_by_id(session, key_id)
    except SQLAlchemyError as error:
        logger.warning("could not record the use of key %s: %s", key_id, type(error).__name__)


@router.post(
    "/{job_id}/cancel",
    responses={409: {"model": ErrorResponse, "description": "The job already ended"}},
)
def cancel_fine_tuning_job(job_id: str, tenant_id: TenantDep, session: SessionDep) -> JobRead:
    job = jobs.cancel_job(session, tenant_id, job_id)
    cancelled = job_views.job_read(job)
    session.commit()
    return cancelled


@router.post(
    "/{job_id}/pause",
    responses={409: {"model": ErrorResponse, "description": "The job already ended"}, 429: AT_CONTROL_LIMIT},
)
def pause_fine_tuning_job(job_id: str, tenant_id: TenantDep, session: SessionDep, settings: SettingsDep) -> JobRead:
    """A queued job pauses at once; a running one checkpoints, frees its worker, then shows `paused`.

    Pausing a paused job, or one whose pause is pending, answers the job and changes nothing.
    """
    job = jobs.pause_job(session, tenant_id, job_id, control_events_per_minute=settings.job_control_events_per_minute)
    paused = job_views.job_read(job)
    session.commit()
    return paused


@router.post(
    "/{job_id}/resume",
    responses={
        409: {"model": ErrorResponse, "description": "The job is not paused"},
        429: {
            **AT_JOB_QUOTA,
            "description": "The tenant is at its max_active_jobs quota, or the job at its "
            "limit of pause, resume and cancel requests per minute",
        },
    },
)
def resume_fine_tuning_job(job_id: str, tenant_id: TenantDep, session: SessionDep, settings: SettingsDep) -> JobRead:
    """A paused job is queued again and continues from the checkpoint it paused at."""
    job, must_send = jobs.resume_job(
        session,
        tenant_id,
        job_id,
        quotas=quotas.quotas_of(session, tenant_id, settings),
        control_events_per_minute=settings.job_control_events_per_minute,
    )
    resumed = job_views.job_read(job)
    session.commit()
    if must_send:
        # A broker that is down costs the user nothing: the job keeps its checkpoint and the
        # workers' sweep sends it once the broker is back (worker.reconciler).
        dispatch.send_job(session, settings.broker_url, job.id, if_broker_down=IfBrokerDown.keep_queued)
        session.commit()
    return resumed


@router.get(
    "/{job_id}/events",
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "A page of events; with `stream=true`, Server-Sent Events (see the README)",
        }
    },
)
def list_fine_tuning_events(
    request: Request,
    job_id: str,
    tenant_id: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
    after: UserText | None = None,
    limit: EventLimitQuery = 20,
    stream: bool = False,
    last_event_id: Annotated[UserText | None, Header(alias="last-event-id", include_in_schema=False)] = None,
) -> Any:
    """Newest first, up to events.MAX_EVENT_PAGE_LIMIT a page; pass a page's last id as `after` for the next.

    With `stream=true`: every event oldest first (after the one named by the `Last-Event-ID` header,
    when sent), then each new one as it is written, then an `end` message once the job has ended
    (api.event_streams). The stream holds no database connection while it waits.
    """
    job = jobs.get_job(session, tenant_id, job_id)
    if stream:
        cursor = event_streams.resume_point(session.connection(), job.id, last_event_id)
        source = event_streams.StreamSource(
            request.app.state.event_feed, settings.database_url, request.app.state.read_limiter
        )
        return EventSourceResponse(
            event_streams.job_event_messages(source, job.id, cursor),
            ping=settings.event_stream_heartbeat_seconds,
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )
    data, has_more = job_views.fill_page(
        lambda cursor, count: events.list_events(session, job.id, after=cursor, limit=count),
        job_views.event_read,
        after=after,
        limit=limit,
    )
    return ListPage[EventRead].of(data, has_more)


@router.get("/{job_id}/checkpoints")
def list_fine_tuning_checkpoints(
    job_id: str, tenant_id: TenantDep, session: SessionDep, after: UserText | None = None, limit: LimitQuery = 10
) -> ListPage[CheckpointRead]:
    job = jobs.get_job(session, tenant_id, job_id)
    data, has_more = job_views.fill_page(
        lambda cursor, count: checkpoints.list_checkpoints(session, job.id, after=cursor, limit=count),
        lambda row: job_views.checkpoint_read(job, row),
        after=after,
        limit=limit,
    )
    return ListPage[CheckpointRead].of(data, has_more)


@router.get("/{job_id}/weights", response_class=FileResponse, responses=DOWNLOAD_RESPONSES)
def download_fine_tuned_weights(
    request: Request, job_id: str, tenant_id: TenantDep, session: SessionDep, store: StoreDep
) -> FileResponse:
    """A tar of a Hugging Face model folder; supports Range requests, and its ETag is the sha256."""
    job = jobs.get_job(session, tenant_id, job_id)
    artifact = artifacts.get_weights_artifact(session, job)
    session.close()
    return file_download(
        request,
        store.path(artifact.blob_key),
        media_type="application/x-tar",
        filename=f"{job.id}.tar",
        headers={"etag": f'"{artifact.sha256}"', "x-checksum-sha256": artifact.sha256},
    )
