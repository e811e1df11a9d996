"""The API's hot read: a job and the key that asks for it in one statement, on SQLAlchemy or raw psycopg."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from psycopg import AsyncConnection
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect

from models.errors import NotFound
from models.ids import IdPrefix, is_well_formed
from models.services import tenants
from models.services.jobs import no_such_job_message
from models.storage.tables import ApiKey, Job

# The job and the presented key's row in one statement: an API GET authenticates and reads in one round trip.
_JOB_FIELDS = tuple(Job.__mapper__.columns.keys())  # attribute names, in the statement's column order
_KEY_COLUMNS = (ApiKey.tenant_id, ApiKey.secret_sha256, ApiKey.revoked_at, ApiKey.id, ApiKey.last_used_at)
_JOB_ID_AT = len(_KEY_COLUMNS) + _JOB_FIELDS.index("id")  # after the key's columns; None when no job matched
_JOB_WITH_KEY = (
    select(*_KEY_COLUMNS, *Job.__mapper__.columns.values())
    .select_from(ApiKey)
    .outerjoin(Job, (Job.id == bindparam("job_id")) & (Job.tenant_id == ApiKey.tenant_id))
    .where(ApiKey.lookup_prefix == bindparam("lookup"))
)


_PSYCOPG = psycopg_dialect()  # type: ignore[no-untyped-call]
_JOB_WITH_KEY_ON_PSYCOPG = str(_JOB_WITH_KEY.compile(dialect=_PSYCOPG))
_PSYCOPG_RESULT = tuple(
    column.type.dialect_impl(_PSYCOPG).result_processor(_PSYCOPG, None) for column in _JOB_WITH_KEY.selected_columns
)


class _KeyColumns(NamedTuple):
    tenant_id: str
    secret_sha256: str
    revoked_at: datetime | None
    id: str
    last_used_at: datetime | None


class KeyedJob(NamedTuple):
    """A job read with the key that asked for it; `key_use_to_note` is the key's id when its last use is
    stale (tenants.key_use_is_stale), for the caller to record once it has answered."""

    job: Job
    key_use_to_note: str | None


def get_job_for_key(connection: Connection, presented_key: str, job_id: str) -> KeyedJob:
    """The job `job_id` of the tenant behind `presented_key`, both read by one statement.

    Answers exactly as `tenants.authenticate` then `get_job` would: Unauthorized for a malformed,
    unknown or revoked key (checked first, from the key's row as it is now, so a revocation takes
    effect at once), then NotFound for a missing job or another tenant's. The job is a detached
    object, read-only. Reads only; `connection` needs no transaction (db.run_read).
    """
    lookup, secret = tenants.split_key(presented_key)
    row = connection.execute(_JOB_WITH_KEY, _job_with_key_parameters(lookup, job_id)).first()
    return _job_of_key_row(tuple(row) if row is not None else None, secret, job_id)


async def read_job_for_key(connection: AsyncConnection[Any], presented_key: str, job_id: str) -> KeyedJob:
    """`get_job_for_key` on a psycopg asyncio connection (models.storage.read_pool): the same statement and answers."""
    lookup, secret = tenants.split_key(presented_key)
    cursor = await connection.execute(_JOB_WITH_KEY_ON_PSYCOPG, _job_with_key_parameters(lookup, job_id))
    row = await cursor.fetchone()
    if row is None:
        return _job_of_key_row(None, secret, job_id)
    # What SQLAlchemy does to each value on its way out (UTCDateTime's conversion to UTC, say).
    values = tuple(
        value if process is None else process(value) for process, value in zip(_PSYCOPG_RESULT, row, strict=True)
    )
    return _job_of_key_row(values, secret, job_id)


def _job_with_key_parameters(lookup: str, job_id: str) -> dict[str, str | None]:
    return {"lookup": lookup, "job_id": job_id if is_well_formed(job_id, IdPrefix.job) else None}


def _job_of_key_row(row: tuple[Any, ...] | None, secret: str, job_id: str) -> KeyedJob:
    key = _KeyColumns(*row[: len(_KEY_COLUMNS)]) if row is not None else None
    tenants.tenant_of_key(key, secret)
    if row is None or key is None or row[_JOB_ID_AT] is None:
        raise NotFound(no_such_job_message(job_id), param="fine_tuning_job_id")
    job = Job(**dict(zip(_JOB_FIELDS, row[len(_KEY_COLUMNS) :], strict=True)))
    return KeyedJob(job, key.id if tenants.key_use_is_stale(key.last_used_at) else None)
