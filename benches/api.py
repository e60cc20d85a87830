#!/usr/bin/env python3
"""The API and the agent -> aggregator path, measured on the real `tapio` binary (release build).

  (a) agent `demo -> grpc` into aggregator `grpc -> blackhole` on loopback, plain and with TLS:
      events/s (from the agent's start until it exited with every batch acknowledged) and the
      CPU each process spent per event.
  (b) Live-stream delivery latency at 10k events/s: a producer sends 100 events every 10 ms, each
      carrying the time it is sent in its id, over gRPC `SubmitEvents` into an aggregator whose
      `grpc` source feeds an `api_store` sink; a receiver in its own process reads the store's
      live NDJSON stream (`GET /v1/events/stream`, the subscription `StreamEvents` reads too)
      and takes each event's age. An upper bound of the store -> client latency: it includes the
      submit call and the pipeline in front of the store.
  (c) REST queries over 1M stored events: `stdin -> correlate -> api_store` fed 1M `demo` events
      (stdin left open, so the store stays and the pipeline idles), then keep-alive
      `GET /v1/events?entity=…` and `GET /v1/correlations/{id}` (indexed), p50/p99.
Usage: python3 benches/api.py [--events N] [--stored N] [--seconds S] [--only a,b,c]
Needs `grpcio-tools` (scripts/test.sh installs it) and openssl for (a)'s certificates.
"""
import argparse
import http.client
import importlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAPIO = os.path.join(ROOT, "target", "release", "tapio")
PROTO = os.path.join(ROOT, "lib", "tapio-proto", "proto")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def wait_port(port, process, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"tapio exited early: {process.stderr.read().decode()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on port {port}")


def cpu_seconds(pid):
    """User + system CPU of a running process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def start(config):
    return subprocess.Popen([TAPIO, "run", "--config", config], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def stop(process):
    process.terminate()
    process.wait(timeout=30)


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def certificates(tmp):
    """A CA and a server certificate for 127.0.0.1 signed by it, made with openssl."""
    ca_key, ca_crt = os.path.join(tmp, "ca.key"), os.path.join(tmp, "ca.crt")
    key, csr, crt = (os.path.join(tmp, n) for n in ("server.key", "server.csr", "server.crt"))
    quiet = {"check": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", ca_key, "-out", ca_crt, "-days", "1", "-subj", "/CN=bench CA"],
                   **quiet)
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"], **quiet)
    extensions = write(os.path.join(tmp, "san.ext"), "subjectAltName=IP:127.0.0.1\n")
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key,
                    "-CAcreateserial", "-out", crt, "-days", "1", "-extfile", extensions], **quiet)
    return ca_crt, crt, key


def agent_to_aggregator(tmp, events, tls):
    """(a): one run; events/s and CPU microseconds per event of the agent and the aggregator."""
    port = free_port()
    server_tls, client_tls, scheme = "", "", "http"
    if tls:
        ca, crt, key = certificates(tmp)
        server_tls = f'tls = {{ crt_file = "{crt}", key_file = "{key}" }}'
        client_tls = f'tls = {{ ca_file = "{ca}" }}'
        scheme = "https"
    aggregator = start(write(os.path.join(tmp, "aggregator.toml"), f"""
[sources.agents]
type = "grpc"
address = "127.0.0.1:{port}"
{server_tls}
[sinks.void]
type = "blackhole"
inputs = ["agents"]
"""))
    wait_port(port, aggregator)
    agent_config = write(os.path.join(tmp, "agent.toml"), f"""
[sources.demo]
type = "demo"
count = {events}
[sinks.aggregator]
type = "grpc"
inputs = ["demo"]
endpoints = ["{scheme}://127.0.0.1:{port}"]
{client_tls}
""")
    before = cpu_seconds(aggregator.pid)
    began = time.monotonic()
    agent = subprocess.Popen([TAPIO, "run", "--config", agent_config], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    _, status, usage = os.wait4(agent.pid, 0)
    elapsed = time.monotonic() - began
    aggregator_cpu = cpu_seconds(aggregator.pid) - before
    stop(aggregator)
    if status != 0:
        sys.exit(f"the agent failed: {agent.stderr.read().decode()}")
    agent_cpu = usage.ru_utime + usage.ru_stime
    return events / elapsed, agent_cpu / events * 1e6, aggregator_cpu / events * 1e6


def grpc_stubs(tmp):
    """The tapio.v1 stubs, generated by grpcio-tools from the committed .proto files."""
    from grpc_tools import protoc
    out = os.path.join(tmp, "stubs")
    os.makedirs(out, exist_ok=True)
    for name in ["tapio/v1/event.proto", "tapio/v1/service.proto"]:
        if protoc.main(["protoc", f"-I{PROTO}", f"--python_out={out}", f"--grpc_python_out={out}", name]) != 0:
            sys.exit(f"protoc failed on {name}")
    sys.path.insert(0, out)
    return (importlib.import_module("tapio.v1.event_pb2"), importlib.import_module("tapio.v1.service_pb2"),
            importlib.import_module("tapio.v1.service_pb2_grpc"))


def stream_latency(tmp, seconds):
    """(b): p50/p99/max milliseconds from submitting an event to a StreamEvents client."""
    import grpc
    event_pb2, service_pb2, service_pb2_grpc = grpc_stubs(tmp)
    grpc_port, api_port = free_port(), free_port()
    tapio = start(write(os.path.join(tmp, "stream.toml"), f"""
[api]
address = "127.0.0.1:{api_port}"
[sources.producer]
type = "grpc"
address = "127.0.0.1:{grpc_port}"
[sinks.store]
type = "api_store"
inputs = ["producer"]
"""))
    wait_port(api_port, tapio)
    wait_port(grpc_port, tapio)
    per_batch, period = 100, 0.010
    total = int(seconds / period) * per_batch
    # The receiver is a process of its own, so its timing does not wait for the producer's
    # share of this interpreter's lock.
    receiver = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--receive",
                                 f"127.0.0.1:{api_port}", str(total)],
                                stdout=subprocess.PIPE, text=True)
    if receiver.stdout.readline().strip() != "subscribed":
        sys.exit("the StreamEvents receiver did not start")

    def batches():
        due = time.monotonic()
        for _ in range(total // per_batch):
            due += period
            time.sleep(max(0.0, due - time.monotonic()))
            now = time.time_ns()
            yield event_pb2.EventBatch(events=[event_pb2.UnifiedEvent(
                id=f"t{now}-{uuid.uuid4()}", timestamp_unix_nano=now, type=event_pb2.EVENT_TYPE_NETWORK,
                source="bench", entity=event_pb2.Entity(type=event_pb2.ENTITY_TYPE_POD, id="pod-1"))
                for _ in range(per_batch)])

    submit_channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    for _ in service_pb2_grpc.EventServiceStub(submit_channel).SubmitEvents(batches()):
        pass
    ages, _ = receiver.communicate(timeout=60)
    stop(tapio)
    millis = [int(age) / 1e6 for age in ages.split()]
    if len(millis) != total:
        sys.exit(f"the stream delivered {len(millis)} of {total} events")
    return percentile(millis, 0.5), percentile(millis, 0.99), max(millis)


def receive(target, total):
    """(b)'s receiver: the live NDJSON stream of the store (the same subscription StreamEvents
    reads) for `total` events, read line by line; prints `subscribed`, then each event's age in
    ns, taken from the send time the producer wrote into its id."""
    host, port = target.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port))
    connection.request("GET", f"/v1/events/stream?limit={total}")
    answer = connection.getresponse()
    if answer.status != 200:
        sys.exit(f"GET /v1/events/stream: {answer.status}")
    print("subscribed", flush=True)  # the store subscribed before it answered
    sent_at = re.compile(rb'"id":"t(\d+)-')
    ages = []
    for line in answer:
        if line.strip():
            ages.append(time.time_ns() - int(sent_at.search(line).group(1)))
            if len(ages) == total:
                break
    print("\n".join(map(str, ages)))


def rest_queries(tmp, stored, rounds):
    """(c): p50/p99 milliseconds of indexed REST queries over `stored` events."""
    # The events first, to a file; then fed through stdin, which stays open so the pipeline
    # (and its store) keeps running, idle, while the queries are timed.
    events = os.path.join(tmp, "stored.ndjson")
    subprocess.run([TAPIO, "run", "--config", write(os.path.join(tmp, "generate.toml"), f"""
[sources.demo]
type = "demo"
count = {stored}
seed = 1
[sinks.out]
type = "file"
inputs = ["demo"]
path = "{events}"
""")], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api_port = free_port()
    tapio = subprocess.Popen([TAPIO, "run", "--config", write(os.path.join(tmp, "store.toml"), f"""
[api]
address = "127.0.0.1:{api_port}"
[sources.stdin]
type = "stdin"
[transforms.correlate]
type = "correlate"
inputs = ["stdin"]
[sinks.store]
type = "api_store"
inputs = ["correlate"]
max_events = {stored}
retention = "24h"
""")], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(events, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            tapio.stdin.write(chunk)
    tapio.stdin.flush()
    wait_port(api_port, tapio)
    connection = http.client.HTTPConnection("127.0.0.1", api_port)

    def fetch(path):
        connection.request("GET", path)
        answer = connection.getresponse()
        body = answer.read()
        if answer.status != 200:
            sys.exit(f"GET {path}: {answer.status} {body[:300]!r}")
        return body

    def get(path):
        return json.loads(fetch(path))

    # Filled once the store's count reached 99% of what was fed (`correlate` holds the last
    # moments back for late events) and stopped moving.
    deadline, last = time.monotonic() + 180, -1
    while time.monotonic() < deadline:
        connection.request("GET", "/metrics")
        metrics = connection.getresponse().read().decode()
        line = next((l for l in metrics.splitlines()
                     if l.startswith("tapio_component_received_events_total") and 'component="store"' in l),
                    None)
        count = float(line.rsplit(" ", 1)[1]) if line else 0
        if count >= 0.99 * stored and count == last:
            break
        last = count
        time.sleep(1)
    else:
        sys.exit("the store did not fill in time")
    sample = get("/v1/events?limit=1000")["events"]
    entities = sorted({e["entity"]["id"] for e in sample})
    correlations = [c["correlation"]["correlation_id"] for c in get("/v1/correlations?limit=100")["correlations"]]
    if not correlations:
        sys.exit("no correlations stored")

    def timed(paths):
        millis = []
        for i in range(rounds):
            # Until the whole answer is read; parsing it is the client's business, not timed.
            began = time.perf_counter()
            fetch(paths[i % len(paths)])
            millis.append((time.perf_counter() - began) * 1e3)
        return percentile(millis, 0.5), percentile(millis, 0.99)

    by_entity = timed([f"/v1/events?entity={e}&limit=100" for e in entities])
    by_correlation = timed([f"/v1/correlations/{c}" for c in correlations])
    tapio.stdin.close()
    stop(tapio)
    return by_entity, by_correlation


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5_000_000, help="events the agent sends in (a)")
    parser.add_argument("--stored", type=int, default=1_000_000, help="events stored for (c)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of (b)'s stream")
    parser.add_argument("--rounds", type=int, default=2000, help="queries per kind in (c)")
    parser.add_argument("--only", default="a,b,c", help="comma-separated scenarios to run")
    parser.add_argument("--receive", nargs=2, metavar=("TARGET", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receive:
        target, count = args.receive
        return receive(target, int(count))
    wanted = set(args.only.split(","))
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "tapio"], cwd=ROOT, check=True)
    with tempfile.TemporaryDirectory() as tmp:
        if "a" in wanted:
            for tls in (False, True):
                rate, agent_us, aggregator_us = agent_to_aggregator(tmp, args.events, tls)
                print(f"(a) agent -> aggregator{' TLS' if tls else ''}: {rate / 1e3:.0f}k events/s, "
                      f"CPU per event: agent {agent_us:.2f} us, aggregator {aggregator_us:.2f} us")
        if "b" in wanted:
            p50, p99, worst = stream_latency(tmp, args.seconds)
            print(f"(b) StreamEvents at 10k events/s: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {worst:.2f} ms")
        if "c" in wanted:
            (e50, e99), (c50, c99) = rest_queries(tmp, args.stored, args.rounds)
            print(f"(c) REST over {args.stored} stored events: entity p50 {e50:.2f} ms p99 {e99:.2f} ms; "
                  f"correlation p50 {c50:.2f} ms p99 {c99:.2f} ms")


if __name__ == "__main__":
    main()
