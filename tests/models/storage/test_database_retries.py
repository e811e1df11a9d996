"""run_transaction reruns a unit of work after a transient database error, and only then; SQLite writers queue."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, create_engine, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from models.services import events, runs, tenants
from models.services.runs import LeaseLost
from models.settings import Settings
from models.storage.database import is_transient_database_error, run_read, run_transaction
from models.storage.tables import Job, JobEvent, Tenant
from tests.models.services.test_jobs import claim

FAST = {"first_delay": 0.001, "max_delay": 0.002}
SECRET_PARAMETER = "tenant-name-that-must-not-be-logged"


def sqlite_busy() -> OperationalError:
    """The error SQLAlchemy raises when SQLite's busy timeout runs out ("database is locked")."""
    driver_error = sqlite3.OperationalError("database is locked")
    driver_error.sqlite_errorcode = sqlite3.SQLITE_BUSY
    return OperationalError("INSERT INTO tenants (name) VALUES (?)", (SECRET_PARAMETER,), driver_error)


def tenant_count(settings: Settings) -> int:
    return run_transaction(settings.database_url, lambda session: session.scalar(select(func.count(Tenant.id))) or 0)


class FlakyWork:
    """Inserts a tenant, then fails with `errors[i]` on call i; succeeds once the errors run out."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self, session: Session) -> str:
        self.calls += 1
        tenant = tenants.create_tenant(session, SECRET_PARAMETER)
        session.flush()
        if self.errors:
            raise self.errors.pop(0)
        return tenant.id


def test_a_unit_failing_transiently_is_rerun_and_commits_once(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    before = tenant_count(settings)
    work = FlakyWork(sqlite_busy(), sqlite_busy(), sqlite_busy())
    with caplog.at_level(logging.WARNING, logger="models.storage.database"):
        tenant_id = run_transaction(settings.database_url, work, attempts=4, **FAST)
    assert work.calls == 4
    assert tenant_count(settings) == before + 1  # the three failed attempts were rolled back
    assert run_transaction(settings.database_url, lambda session: session.get(Tenant, tenant_id)) is not None
    retries = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert [record.getMessage().endswith(f"(attempt {n} of 4)") for n, record in enumerate(retries, 2)] == [True] * 3
    assert "OperationalError, SQLSTATE None" in retries[0].getMessage()
    assert SECRET_PARAMETER not in caplog.text  # no statement parameters in the log


def test_a_dropped_connection_is_retried(settings: Settings) -> None:
    dropped = DBAPIError("SELECT 1", None, Exception("server closed the connection"), connection_invalidated=True)
    work = FlakyWork(dropped)
    run_transaction(settings.database_url, work, attempts=2, **FAST)
    assert work.calls == 2


def test_an_integrity_error_is_not_retried(settings: Settings) -> None:
    run_transaction(settings.database_url, lambda session: tenants.create_tenant(session, SECRET_PARAMETER))
    calls = 0

    def insert_a_duplicate_name(session: Session) -> None:
        nonlocal calls
        calls += 1
        session.add(Tenant(id="tenant-duplicate", name=SECRET_PARAMETER))
        session.flush()

    with pytest.raises(IntegrityError):
        run_transaction(settings.database_url, insert_a_duplicate_name, attempts=5, **FAST)
    assert calls == 1


def test_lease_lost_is_not_retried(settings: Settings, new_job: Callable[[], str]) -> None:
    job_id = new_job()
    assert claim(settings, job_id) == 1
    calls = 0

    def write_progress_of_an_older_attempt(session: Session) -> None:
        nonlocal calls
        calls += 1
        runs.record_progress(session, job_id, 0, trained_tokens=1)

    with pytest.raises(LeaseLost):
        run_transaction(settings.database_url, write_progress_of_an_older_attempt, attempts=5, **FAST)
    assert calls == 1


def test_attempts_are_bounded_and_the_last_error_propagates(settings: Settings) -> None:
    before = tenant_count(settings)
    errors = [sqlite_busy() for _ in range(3)]
    work = FlakyWork(*errors)
    with pytest.raises(OperationalError) as raised:
        run_transaction(settings.database_url, work, attempts=3, **FAST)
    assert raised.value is errors[-1]
    assert work.calls == 3
    assert tenant_count(settings) == before


def test_backoff_doubles_up_to_the_cap(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr("models.storage.database.time.sleep", waits.append)
    monkeypatch.setattr("models.storage.database.random.uniform", lambda low, high: high)  # no jitter
    with pytest.raises(OperationalError):
        run_transaction(
            settings.database_url,
            FlakyWork(*[sqlite_busy() for _ in range(6)]),
            attempts=6,
            first_delay=0.1,
            max_delay=0.5,
        )
    assert waits == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])


def test_attempts_below_one_are_refused(settings: Settings) -> None:
    with pytest.raises(ValueError, match="attempts must be at least 1"):
        run_transaction(settings.database_url, FlakyWork(), attempts=0)


def wrapped(driver_error: Exception) -> BaseException:
    """The driver error as SQLAlchemy raises it (an OperationalError, IntegrityError, … wrapping it)."""
    return DBAPIError.instance("SELECT 1", None, driver_error, psycopg.Error)


@pytest.mark.parametrize(
    ("driver_error", "transient"),
    [
        (psycopg.OperationalError("connection failed: Connection refused"), True),
        (psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"), True),
        (psycopg.errors.AdminShutdown("terminating connection due to administrator command"), True),  # 57P01
        (psycopg.errors.CrashShutdown("crash"), True),  # 57P02
        (psycopg.errors.CannotConnectNow("the database system is starting up"), True),  # 57P03
        (psycopg.errors.IdleSessionTimeout("idle"), True),  # 57P05
        (psycopg.errors.ConnectionFailure("lost"), True),  # 08006
        (psycopg.errors.SqlclientUnableToEstablishSqlconnection("no"), True),  # 08001
        (psycopg.errors.SerializationFailure("could not serialize access"), True),  # 40001
        (psycopg.errors.DeadlockDetected("deadlock detected"), True),  # 40P01
        (psycopg.errors.UniqueViolation("duplicate key"), False),  # 23505
        (psycopg.errors.QueryCanceled("statement timeout"), False),  # 57014
        (psycopg.errors.DatabaseDropped("dropped"), False),  # 57P04
        (psycopg.errors.UndefinedTable("no such table"), False),  # 42P01
        (psycopg.errors.DiskFull("disk full"), False),  # 53100
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_postgresql_errors_are_classified_by_sqlstate(driver_error: Exception, transient: bool) -> None:
    assert is_transient_database_error(wrapped(driver_error)) is transient


def test_domain_and_plain_errors_are_not_transient() -> None:
    assert not is_transient_database_error(LeaseLost("ftjob-1"))
    assert not is_transient_database_error(ValueError("no"))


@pytest.fixture
def locked_database(settings: Settings) -> Iterator[str]:
    """The test database with its write lock held by another connection."""
    path = settings.database_url.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    yield path
    holder.execute("ROLLBACK")
    holder.close()


def test_sqlite_database_is_locked_is_transient_and_other_sqlite_errors_are_not(locked_database: str) -> None:
    impatient = create_engine(f"sqlite:///{locked_database}", connect_args={"timeout": 0})
    try:
        with impatient.connect() as connection:
            with pytest.raises(OperationalError, match="database is locked") as locked:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            assert is_transient_database_error(locked.value)
            with pytest.raises(OperationalError, match="no such table") as missing:
                connection.execute(text("SELECT * FROM no_such_table"))
            assert not is_transient_database_error(missing.value)
    finally:
        impatient.dispose()


WRITERS = 20
HEARTBEAT_SECONDS = 0.05


class Heartbeat:
    """Renews a running job's lease every 50 ms in a thread of its own, as the runner does; keeps any error."""

    def __init__(self, settings: Settings, job_id: str, attempt: int) -> None:
        self.renewals: list[object] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()

        def renew_lease(session: Session) -> object:
            return runs.renew_lease(session, job_id, attempt, lease_seconds=30)

        def beat() -> None:
            while not self._stop.wait(HEARTBEAT_SECONDS):
                try:
                    # One attempt: a "database is locked" must surface here, not be retried away.
                    self.renewals.append(run_transaction(settings.database_url, renew_lease, attempts=1))
                except Exception as error:
                    self.errors.append(error)

        self._thread = threading.Thread(target=beat)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def lost(renewal: object) -> bool:
    """Whether renew_lease said the run lost the job (False, or LeaseState.lost where it reports pauses too)."""
    return renewal is False or renewal == "lost"


def run_writers(write: Callable[[int], Any]) -> list[Any]:
    """WRITERS threads released together, each calling write(index); returns results or exceptions."""
    barrier = threading.Barrier(WRITERS)
    results: list[Any] = [None] * WRITERS

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = write(index)
        except Exception as error:
            results[index] = error

    threads = [threading.Thread(target=run, args=(index,)) for index in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_twenty_api_writers_beside_a_heartbeat_never_see_database_is_locked(
    settings: Settings,
    client: TestClient,
    auth: dict[str, str],
    new_job: Callable[[], str],
) -> None:
    running = new_job()
    attempt = claim(settings, running)
    assert attempt == 1
    url = settings.database_url
    training_file = run_transaction(url, lambda session: session.get_one(Job, running).training_file_id)
    jobs_per_writer = 3

    def create_jobs(_: int) -> list[int]:
        return [
            client.post("/v1/fine_tuning/jobs", headers=auth, json={"training_file": training_file}).status_code
            for _ in range(jobs_per_writer)
        ]

    started = time.monotonic()
    with Heartbeat(settings, running, attempt) as heartbeat:
        results = run_writers(create_jobs)
        # The writers may finish before the heartbeat's first beat on a fast machine; see some beats.
        while len(heartbeat.renewals) < 3 and time.monotonic() - started < 30:
            time.sleep(HEARTBEAT_SECONDS)
    assert results == [[200] * jobs_per_writer] * WRITERS
    assert heartbeat.errors == []
    assert heartbeat.renewals and not any(lost(renewal) for renewal in heartbeat.renewals)
    job_count = run_transaction(settings.database_url, lambda session: session.scalar(select(func.count(Job.id))))
    assert job_count == 1 + WRITERS * jobs_per_writer


def test_twenty_event_writers_beside_a_heartbeat_never_see_database_is_locked(
    settings: Settings,
    new_job: Callable[[], str],
) -> None:
    job_id = new_job()
    attempt = claim(settings, job_id)
    assert attempt == 1
    events_per_writer = 10

    def append_events(writer: int) -> None:
        for number in range(events_per_writer):
            message = f"writer {writer} event {number}"

            def append_fenced_event(session: Session, message: str = message) -> None:
                runs.ensure_run_owns_job(session, job_id, attempt)
                events.append_event(session, job_id, message)

            run_transaction(settings.database_url, append_fenced_event, attempts=1)

    def count_writer_events(session: Session) -> int:
        query = select(func.count(JobEvent.id)).where(JobEvent.job_id == job_id, JobEvent.message.like("writer %"))
        return session.scalar(query) or 0

    with Heartbeat(settings, job_id, attempt) as heartbeat:
        results = run_writers(append_events)
    assert results == [None] * WRITERS
    assert heartbeat.errors == []
    assert not any(lost(renewal) for renewal in heartbeat.renewals)
    assert run_transaction(settings.database_url, count_writer_events) == WRITERS * events_per_writer


def dropped_connection() -> OperationalError:
    """What SQLAlchemy raises when a pooled connection turns out to be dead (it then replaces it)."""
    return OperationalError(
        "SELECT 1", {}, psycopg.OperationalError("server closed the connection"), connection_invalidated=True
    )


def test_a_read_whose_connection_was_dropped_runs_once_more(settings: Settings) -> None:
    calls = 0

    def read(connection: Connection) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise dropped_connection()
        return int(connection.execute(text("SELECT 7")).scalar_one())

    assert run_read(settings.database_url, read) == 7
    assert calls == 2


@pytest.mark.parametrize("failure", [sqlite_busy, lambda: OperationalError("SELECT 1", {}, Exception("x"))])
def test_a_read_failing_otherwise_is_not_rerun(settings: Settings, failure: Callable[[], Exception]) -> None:
    calls = 0

    def read(_connection: Connection) -> None:
        nonlocal calls
        calls += 1
        raise failure()

    with pytest.raises(OperationalError):
        run_read(settings.database_url, read)
    assert calls == 1


def test_a_read_dropped_twice_raises_for_the_api_to_answer_503(settings: Settings) -> None:
    def read(_connection: Connection) -> None:
        raise dropped_connection()

    with pytest.raises(OperationalError) as raised:
        run_read(settings.database_url, read)
    assert is_transient_database_error(raised.value)
