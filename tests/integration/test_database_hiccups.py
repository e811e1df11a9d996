"""PostgreSQL behind a TCP proxy that drops connections or refuses them: transactions ride out the hiccup."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from migrations.apply import upgrade_to_head
from models.services import tenants
from models.storage.database import close_engine, run_transaction
from models.storage.tables import Tenant
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.fault]

OUTAGE_SECONDS = 1.5


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[TcpProxy]:
    upgrade_to_head(postgres_url)
    server = make_url(postgres_url)
    assert server.host is not None and server.port is not None
    with TcpProxy(server.host, server.port) as tcp_proxy:
        yield tcp_proxy


@pytest.fixture
def proxied_url(postgres_url: str, proxy: TcpProxy) -> Iterator[str]:
    """The test database, reached through the proxy."""
    url = make_url(postgres_url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    yield url
    close_engine(url)


def add_tenant(name: str) -> Callable[[Session], str]:
    def work(session: Session) -> str:
        return tenants.create_tenant(session, name).id

    return work


def tenant_names(postgres_url: str) -> list[str]:
    """Read straight from the server, not through the proxy."""
    return run_transaction(
        postgres_url, lambda session: list(session.scalars(select(Tenant.name).order_by(Tenant.name)))
    )


def retry_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "models.storage.database"]


def test_a_connection_dropped_while_idle_is_replaced_before_use(
    postgres_url: str, proxied_url: str, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    run_transaction(proxied_url, add_tenant("before"))
    assert proxy.accepted == 1  # one pooled connection, now idle
    proxy.drop_connections()
    with caplog.at_level(logging.WARNING, logger="models.storage.database"):
        run_transaction(proxied_url, add_tenant("after"), attempts=1)  # one attempt: pool_pre_ping, not a retry
    assert proxy.accepted == 2
    assert retry_warnings(caplog) == []
    assert tenant_names(postgres_url) == ["after", "before"]


def test_a_connection_dropped_mid_transaction_reruns_the_unit_which_commits_once(
    postgres_url: str, proxied_url: str, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    def add_tenant_losing_the_connection_once(session: Session) -> str:
        nonlocal calls
        calls += 1
        tenant_id = tenants.create_tenant(session, "mid-transaction").id
        session.flush()
        if calls == 1:
            proxy.drop_connections()
        session.execute(text("SELECT 1"))
        return tenant_id

    with caplog.at_level(logging.WARNING, logger="models.storage.database"):
        run_transaction(proxied_url, add_tenant_losing_the_connection_once, first_delay=0.01)
    assert calls == 2
    warnings = retry_warnings(caplog)
    assert len(warnings) == 1
    assert "connection invalidated: True" in warnings[0]
    assert tenant_names(postgres_url) == ["mid-transaction"]


def test_a_transaction_issued_during_an_outage_commits_once_the_server_is_back(
    postgres_url: str, proxied_url: str, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    run_transaction(proxied_url, add_tenant("before"))  # a pooled connection, about to die
    proxy.refuse_connections()
    started = time.monotonic()
    outage_end = threading.Timer(OUTAGE_SECONDS, proxy.accept_connections)
    outage_end.start()
    try:
        with caplog.at_level(logging.WARNING, logger="models.storage.database"):
            # Waits of 0.1, 0.2, 0.4, 0.8, 1, 1, 1 s × 0.5–1.0: at least 2.25 s in all, longer than the outage.
            run_transaction(proxied_url, add_tenant("during"), attempts=8, first_delay=0.1, max_delay=1.0)
    finally:
        outage_end.join()
    assert time.monotonic() - started >= OUTAGE_SECONDS
    warnings = retry_warnings(caplog)
    assert warnings and all("OperationalError" in warning for warning in warnings)
    assert tenant_names(postgres_url) == ["before", "during"]


def test_an_outage_outlasting_the_attempts_raises_the_driver_error(
    postgres_url: str, proxied_url: str, proxy: TcpProxy
) -> None:
    run_transaction(proxied_url, add_tenant("before"))
    proxy.refuse_connections()
    calls = 0

    def add_tenant_counting_calls(session: Session) -> str:
        nonlocal calls
        calls += 1
        return add_tenant("lost")(session)

    with pytest.raises(OperationalError) as raised:
        run_transaction(proxied_url, add_tenant_counting_calls, attempts=3, first_delay=0.05, max_delay=0.1)
    assert isinstance(raised.value.orig, psycopg.OperationalError)
    assert "Connection refused" in str(raised.value.orig)
    assert calls == 3
    proxy.accept_connections()
    assert tenant_names(postgres_url) == ["before"]  # nothing committed behind the error
