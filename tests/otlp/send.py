#!/usr/bin/env python3
"""An independent OTLP sender for the tests: the OpenTelemetry Python SDK with its OTLP/gRPC
exporters (PyPI), not Tapio's code. As one pod's application (resource attributes
k8s.pod.name, k8s.pod.uid, k8s.namespace.name, k8s.node.name, service.name) it sends an error
log inside a failing span, the failing span (status ERROR, with a recorded exception), and a
span that went well; then prints {"trace_id", "span_id"} of the failing span as JSON.

Usage: send.py ENDPOINT [TOKEN]      (ENDPOINT as host:port)
"""

import json
import logging
import sys

from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

POD = {
    "service.name": "checkout",
    "k8s.pod.name": "checkout-5f7d",
    "k8s.pod.uid": "0b7c6f0e-1111-4222-8333-444455556666",
    "k8s.namespace.name": "shop",
    "k8s.node.name": "worker-2",
}


def main():
    endpoint = sys.argv[1]
    headers = (("authorization", f"Bearer {sys.argv[2]}"),) if len(sys.argv) > 2 else None
    resource = Resource.create(POD)
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True, headers=headers))
    )
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=endpoint, insecure=True, headers=headers))
    )
    logger = logging.getLogger("checkout")
    logger.propagate = False
    logger.addHandler(LoggingHandler(level=logging.INFO, logger_provider=logger_provider))
    logger.setLevel(logging.INFO)
    tracer = tracer_provider.get_tracer("checkout")
    with tracer.start_as_current_span("list-cart"):
        pass
    with tracer.start_as_current_span("charge") as span:
        logger.error("payment failed: connection reset by peer", extra={"order.id": "o-17"})
        span.record_exception(ConnectionResetError("connection reset by peer"))
        span.set_status(Status(StatusCode.ERROR, "payment backend unreachable"))
        context = span.get_span_context()
    logger_provider.shutdown()
    tracer_provider.shutdown()
    print(json.dumps({"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}))


if __name__ == "__main__":
    main()
