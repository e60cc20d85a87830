#!/usr/bin/env python3
"""An independent OTLP receiver for the tests (grpcio and opentelemetry-proto from PyPI, not
Tapio's code): serves OTLP/gRPC or OTLP/HTTP on 127.0.0.1:PORT and appends every request it
decodes to OUT as one JSON line, {"signal": "logs"|"traces", "request": <MessageToDict>},
field names as in the .proto files and ids as lowercase hex. Prints "ready" once listening and
stops after TIMEOUT seconds.

With --status CODE (HTTP) every request is refused with that status and a google.rpc.Status
body; with --partial N every answer is a partial success rejecting N records.

Usage: receive.py grpc|http PORT OUT [--status CODE] [--partial N] [--timeout SECONDS]
"""

import argparse
import base64
import gzip
import json
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf.json_format import MessageToDict
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

LOCK = threading.Lock()
ID_FIELDS = {"trace_id", "span_id", "parent_span_id"}


def hex_ids(value):
    """MessageToDict writes bytes as base64; ids read better (and compare with rotel's) as hex."""
    if isinstance(value, dict):
        return {
            key: (bytes_hex(item) if key in ID_FIELDS else hex_ids(item)) for key, item in value.items()
        }
    if isinstance(value, list):
        return [hex_ids(item) for item in value]
    return value


def bytes_hex(text):
    return base64.b64decode(text).hex()


class Recorder:
    def __init__(self, path, partial):
        self.path = path
        self.partial = partial

    def record(self, signal, message):
        line = json.dumps(
            {"signal": signal, "request": hex_ids(MessageToDict(message, preserving_proto_field_name=True))}
        )
        with LOCK, open(self.path, "a", encoding="utf-8") as out:
            out.write(line + "\n")

    def logs_response(self):
        response = logs_service_pb2.ExportLogsServiceResponse()
        if self.partial:
            response.partial_success.rejected_log_records = self.partial
            response.partial_success.error_message = "test receiver rejects some records"
        return response

    def traces_response(self):
        response = trace_service_pb2.ExportTraceServiceResponse()
        if self.partial:
            response.partial_success.rejected_spans = self.partial
            response.partial_success.error_message = "test receiver rejects some spans"
        return response


class Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, recorder):
        self.recorder = recorder

    def Export(self, request, context):
        self.recorder.record("logs", request)
        return self.recorder.logs_response()


class Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, recorder):
        self.recorder = recorder

    def Export(self, request, context):
        self.recorder.record("traces", request)
        return self.recorder.traces_response()


def serve_grpc(port, recorder):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(recorder), server)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(recorder), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server.stop


def serve_http(port, recorder, status):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            signals = {
                "/v1/logs": ("logs", logs_service_pb2.ExportLogsServiceRequest, recorder.logs_response),
                "/v1/traces": ("traces", trace_service_pb2.ExportTraceServiceRequest, recorder.traces_response),
            }
            if self.path not in signals:
                self.send_error(404)
                return
            signal, request_type, response = signals[self.path]
            if status:
                answer = status_pb2.Status(code=3, message=f"test receiver refuses with {status}")
                self.answer(status, answer.SerializeToString())
                return
            request = request_type()
            request.ParseFromString(body)
            recorder.record(signal, request)
            self.answer(200, response().SerializeToString())

        def answer(self, code, payload):
            self.send_response(code)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return lambda grace: server.shutdown()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("protocol", choices=["grpc", "http"])
    parser.add_argument("port", type=int)
    parser.add_argument("out")
    parser.add_argument("--status", type=int, default=0)
    parser.add_argument("--partial", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    recorder = Recorder(args.out, args.partial)
    if args.protocol == "grpc":
        stop = serve_grpc(args.port, recorder)
    else:
        stop = serve_http(args.port, recorder, args.status)
    print("ready", flush=True)
    time.sleep(args.timeout)
    stop(0)


if __name__ == "__main__":
    sys.exit(main())
