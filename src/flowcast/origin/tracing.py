"""OpenTelemetry tracing of the live stack, exported over OTLP/HTTP when configured.

On when ``telemetry.otlp_endpoint`` is set, or else the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` environment variable (both the collector's base URL, e.g.
``http://collector:4318``; ``/v1/traces`` is appended as the OTLP spec says, unless the
URL already ends with it). Off otherwise: ``OriginApp.tracing`` is None and the media path
pays one ``is not None`` branch.

Spans (service.name ``flowcast``):
- ``<METHOD> <resource>`` (SERVER) per origin /live/ request: ``flowcast.resource`` (init,
  part, segment, playlist, manifest, other), ``http.response.status_code``,
  ``flowcast.response_bytes``, ``flowcast.held`` and ``flowcast.wait_ms`` (time held by a
  blocking playlist reload or a part/segment not yet published), ``flowcast.blocking_reload``,
  ``session.id`` = the CMCD ``sid``. A W3C ``traceparent`` (and ``tracestate``) on the
  request makes the span a child of the player's span.
- ``part.publish`` per part published (rendition, publish lag);
- ``encoder.run`` / ``encoder.restart`` when the supervisor starts FFmpeg (run number).

Exporting is batched in the SDK's own thread (BatchSpanProcessor): a slow or absent
collector never blocks a request, spans are dropped instead.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from flowcast.package.directives import DirectiveError
from flowcast.package.directives import parse_directives
from flowcast.telemetry.cmcd import CmcdError, cmcd_from_request

from .store import MediaStore
from .telemetry_routes import RecordingProto

log = logging.getLogger(__name__)

ENV_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"
_EXT_KIND: Final = {".m3u8": "playlist", ".mpd": "manifest", ".mp4": "init", ".m4s": "segment"}


class TracingError(ValueError):
    """A tracing endpoint that cannot be used; the message names the setting."""


def traces_url(endpoint: str, setting: str = "telemetry.otlp_endpoint") -> str:
    """The OTLP/HTTP traces URL for a collector base URL (OTLP exporter spec)."""
    if not endpoint.startswith(("http://", "https://")):
        raise TracingError(f"{setting}: must be an http(s) URL, got {endpoint!r}")
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


def resolve_endpoint(configured: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The configured endpoint, else $OTEL_EXPORTER_OTLP_ENDPOINT, else None (tracing off)."""
    env = os.environ if env is None else env
    if configured:
        return traces_url(configured)
    endpoint = env.get(ENV_ENDPOINT)
    return traces_url(endpoint, f"${ENV_ENDPOINT}") if endpoint else None


class OriginTracing:
    """The hook object the origin app and the stack call (see the module docstring)."""

    def __init__(self, endpoint: str, store: MediaStore, *, service_name: str = "flowcast",
                 export_delay_ms: int = 1000) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.endpoint = traces_url(endpoint)
        self.store = store
        # A provider of our own, not the global one: nothing else in the process is traced
        # by accident, and stop() flushes exactly what we made.
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self.provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=self.endpoint, timeout=5), schedule_delay_millis=export_delay_ms)
        )
        self.tracer = self.provider.get_tracer("flowcast.origin")
        self._propagator = TraceContextTextMapPropagator()
        self._server = SpanKind.SERVER
        self._error = Status(StatusCode.ERROR)
        log.info("tracing: exporting spans to %s", self.endpoint)

    # -- origin requests --------------------------------------------------------------------
    async def traced(
        self,
        scope: Any,
        proto: Any,
        path: str,
        head: bool,
        serve: Callable[[Any, Any, str, bool], Awaitable[None]],
    ) -> None:
        """Serve one /live/ request through ``serve`` inside its span."""
        headers = scope.headers
        carrier = {k: v for k in ("traceparent", "tracestate") if (v := headers.get(k))}
        ctx = self._propagator.extract(carrier) if carrier else None
        key = path[6:]
        blocking = self._blocking(key, scope.query_string)
        absent = not blocking and self.store.playlist(key) is None and self.store.get(key) is None
        rec = RecordingProto(proto, time.perf_counter())
        span = self.tracer.start_span(f"{scope.method} {self._resource(key)}", context=ctx, kind=self._server)
        try:
            await serve(scope, rec, path, head)
        except BaseException:
            span.set_status(self._error)
            raise
        finally:
            held = blocking or absent
            attrs: dict[str, Any] = {
                "http.request.method": scope.method,
                "url.path": path,
                "flowcast.resource": self._resource(key),
                "http.response.status_code": rec.status or 499,
                "flowcast.response_bytes": rec.nbytes,
                "flowcast.held": held,
                "flowcast.blocking_reload": blocking,
                "flowcast.wait_ms": rec.ttfb_ms if held else 0.0,
            }
            sid = _session_id(scope.query_string, headers)
            if sid:
                attrs["session.id"] = sid
            span.set_attributes(attrs)
            if rec.status >= 500:
                span.set_status(self._error)
            span.end()

    def _blocking(self, key: str, query: str) -> bool:
        """A blocking playlist reload that the current playlist does not satisfy yet."""
        pl = self.store.playlist(key)
        if pl is None or "_HLS_msn" not in query:
            return False
        try:
            d = parse_directives(query)
        except DirectiveError:
            return False  # answered 400 without waiting
        return d.msn is not None and not pl.ended and not pl.satisfies(d.msn, d.part)

    def _resource(self, key: str) -> str:
        if self.store.playlist(key) is not None:
            return "playlist"
        obj = self.store.get(key)
        if obj is not None:
            return obj.kind.value
        name = key.rpartition("/")[2]
        ext = name[name.rfind("."):].lower() if "." in name else ""
        if ext == ".m4s" and name.count(".") >= 2:
            return "part"  # <msn>.<part>.m4s
        if name == "master.m3u8":
            return "manifest"
        return _EXT_KIND.get(ext, "other")

    # -- pipeline ---------------------------------------------------------------------------
    def part_published(self, rendition: str, lag_s: float) -> None:
        span = self.tracer.start_span("part.publish")
        span.set_attributes({"flowcast.rendition": rendition, "flowcast.publish_lag_ms": max(lag_s, 0.0) * 1000})
        span.end()

    def wrap_part_published(self, fn: Callable[[str, float], None]) -> Callable[[str, float], None]:
        """``OriginMetrics.part_published`` plus a span (the pipeline calls it per part)."""

        def published(rendition: str, lag_s: float) -> None:
            fn(rendition, lag_s)
            self.part_published(rendition, lag_s)

        return published

    def wrap_run_start(self, fn: Callable[[int, float], None] | None) -> Callable[[int, float], None]:
        """The supervisor's ``on_run_start`` plus a span: run 1 is the start, later runs
        are restarts after FFmpeg exited."""

        def run_start(run_number: int, started: float) -> None:
            name = "encoder.run" if run_number <= 1 else "encoder.restart"
            span = self.tracer.start_span(name)
            span.set_attributes({"flowcast.encoder.run": run_number, "flowcast.encoder.restarts": max(0, run_number - 1)})
            span.end()
            if fn is not None:
                fn(run_number, started)

        return run_start

    def shutdown(self) -> None:
        """Export what is pending (bounded by the exporter timeout) and stop."""
        self.provider.shutdown()


def _session_id(query: str, headers: Any) -> str:
    try:
        cmcd = cmcd_from_request(query, {k: v for k in ("cmcd-session",) if (v := headers.get(k))})
    except CmcdError:
        return ""
    sid = cmcd.get("sid")
    return sid[:64] if isinstance(sid, str) else ""
