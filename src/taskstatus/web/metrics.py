"""``GET /metrics`` of ``taskstatus serve``: store-wide gauges for Prometheus, computed from the
database at each scrape (see :func:`taskstatus.observability.prometheus.store_collector`).

One scrape sees the whole fleet, whichever worker ran what. The gauges name no owner, but
they tell how busy the system is: like the rest of ``taskstatus serve``, only the operator
(the token, or a loopback caller when there is none) may read them.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from ..tracker import Tracker
from .errors import Forbidden, Unauthenticated
from .principal import Authenticator, identify

__all__ = ["add_metrics_route"]


def add_metrics_route(
    app: FastAPI, authenticate: Authenticator, tracker: Callable[[], Tracker]
) -> None:
    """Serve the store-wide gauges at ``/metrics`` to superusers; without the extra
    ``prometheus`` it answers 501, naming it."""

    async def metrics(request: Request) -> Response:
        principal = await identify(authenticate, request)
        if principal is None:
            raise Unauthenticated("Authentication required.")
        if not principal.is_superuser:
            raise Forbidden("Only an operator may read the metrics.")
        try:
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            from ..observability.prometheus import store_collector
        except ImportError as exc:
            return PlainTextResponse(
                f"/metrics needs the extra 'prometheus': pip install 'taskstatus[prometheus]' "
                f"({exc})\n",
                status_code=501,
            )
        registry = store_collector(tracker())
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
