"""The route class of every router: a sync handler hands its database connection back before it returns.

FastAPI runs a sync handler in the threadpool (40 threads), then validates its return value in a
second threadpool call, and only then closes the request's session. A handler that kept its
connection until then made the request wait for a thread while holding a connection: with more
requests in flight than threads plus pool connections (about 60), every thread waited for a
connection held by a request waiting for a thread, and the API stalled until the pool's 30 s
timeout (bench/api.py at 100 clients). Closing the session in the handler's own thread breaks
that cycle: a request never waits for a thread while it holds a connection.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute
from sqlalchemy.orm import Session


class SessionReleasingRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = release_sessions_on_return(endpoint)
        super().__init__(path, endpoint, **kwargs)


def release_sessions_on_return(handler: Callable[..., Any]) -> Callable[..., Any]:
    """`handler`, closing every Session among its arguments when it returns or raises, in its own thread.

    What it returns is built already (response models, not lazy rows), and a closed session can
    still be used: it opens a new transaction if anything touches it again.
    """
    # FastAPI reads the parameters from the signature; resolve the string annotations here, in the
    # handler's module, since the wrapper lives in this one.
    signature = inspect.signature(handler, eval_str=True)

    @functools.wraps(handler)
    def call_then_release(**arguments: Any) -> Any:
        try:
            return handler(**arguments)
        finally:
            for value in arguments.values():
                if isinstance(value, Session):
                    value.close()

    call_then_release.__signature__ = signature  # type: ignore[attr-defined]
    return call_then_release
