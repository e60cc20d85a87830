#!/usr/bin/env python3
"""Throughput of Tapio's `kafka` and `clickhouse` sinks (release build) beside the raw speed of
the same broker and server driven directly, measured in one run on this machine:
  (a) demo -> kafka         tapio (`demo` source, `kafka` sink, zstd, acks=all) against a plain
                            confluent-kafka producer of the same NDJSON payloads and keys
                            (acks=all, idempotent, zstd, tapio's batch defaults), timed from the
                            first produce to the end of flush. The tapio time is the whole
                            `tapio run`, which ends once every message is confirmed.
  (b) kafka -> clickhouse   tapio (`kafka` source, `clickhouse` sink, default batching) reading a
                            topic prefilled with the same events, timed from process start until
                            `SELECT count()` reaches N; against `clickhouse-client` (native TCP)
                            inserting the rows tapio inserted, the same rows over HTTP in chunks
                            of the sink's default batch (gzip, sequential), and a confluent-kafka
                            consumer reading the topic. The raw speed of (b) is the slower of the
                            raw consume and the clickhouse-client insert. Variants: the sink's
                            defaults (RowBinary, LZ4), tuned for a server on the same host, and
                            the JSONEachRow format (gzip) for comparison.
  (c) demo -> clickhouse    tapio (`demo` source, `clickhouse` sink, defaults), the whole
                            `tapio run` from start to exit (it exits once every row is inserted);
                            against the same clickhouse-client insert of its rows.
Goal: Tapio reaches >= 80% of the raw speed. Also reports Tapio's peak RSS per scenario.

The script starts its own tansu broker (in-memory storage) and ClickHouse server on free loopback
ports in a temporary directory and stops them at the end. tansu 0.6.0 caveats: its ListOffsets
(high watermark) is wrong, so nothing here relies on lag or end offsets (messages are counted);
and a fetch from an offset inside a record batch is answered with the next batch, which is
harmless here because every consumer starts at offset 0 of a fresh group and is never paused.
tansu also answers every fetch only after the consumer's whole `fetch.wait.max.ms` (500 ms by
default) even when data is there, which caps any consumer at ~50k messages/s; both consumers
here (Tapio's `kafka` source and the raw one) set it to FETCH_WAIT_MS so that the comparison
measures the clients, not that wait.

Needs target/release/tapio (cargo build --release), .tools/tansu (scripts/test.sh),
clickhouse-server and clickhouse-client (apt) and the Python package confluent-kafka.
Usage: python3 benches/kafka_clickhouse.py [--events N] [--runs R] [--only a,b,c]
"""
import argparse
import contextlib
import gzip
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAPIO = os.path.join(ROOT, "target", "release", "tapio")
TANSU = os.path.join(ROOT, ".tools", "tansu", "bin", "tansu")
CLICKHOUSE_BINARIES = ["/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server", "/usr/bin/clickhouse"]
CLICKHOUSE_CONFIG = "/etc/clickhouse-server"
PARTITIONS = 3
SINK_BATCH = 10000  # the clickhouse sink's default batch.max_events
STALL_SECONDS = 60


class BenchError(Exception):
    """A scenario that could not finish; reported in the table instead of a number."""


def free_port():
    """A free loopback port (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, seconds, what):
    """Polls `predicate` every 50 ms until it is true; raises after `seconds`."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {what}")
        time.sleep(0.05)


def stop(process):
    """Terminates a server process and reaps it (SIGKILL after 10 s)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def tansu_broker(tmp):
    """A tansu broker with in-memory storage; yields its `host:port`."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = open(os.path.join(tmp, "tansu.log"), "wb")
    process = subprocess.Popen([TANSU, "broker", "--listener-url", url, "--advertised-listener-url", url,
                                "--storage-engine", "memory://tansu/"],
                               cwd=tmp, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        def accepts():
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0
        wait_until(accepts, 15, f"tansu to listen on {port} (see {log.name})")
        yield f"127.0.0.1:{port}"
    finally:
        stop(process)
        log.close()


def create_topic(broker, topic):
    """Creates `topic` with PARTITIONS partitions."""
    subprocess.run([TANSU, "topic", "create", topic, "--broker", f"tcp://{broker}",
                    "--partitions", str(PARTITIONS)], check=True, stdout=subprocess.DEVNULL)


def write_clickhouse_config(directory, http_port, tcp_port):
    """Copies the packaged config into `directory` as tests/clickhouse/server.rs does: every path
    pointing there, listening on 127.0.0.1 at the two ports only."""
    with open(os.path.join(CLICKHOUSE_CONFIG, "users.xml")) as f, \
            open(os.path.join(directory, "users.xml"), "w") as out:
        out.write(f.read())
    dropped = ("<listen_host>", "<interserver_http_port>", "<mysql_port>", "<postgresql_port>",
               "<https_port>", "<tcp_port_secure>")
    lines = []
    with open(os.path.join(CLICKHOUSE_CONFIG, "config.xml")) as f:
        for line in f:
            trimmed = line.lstrip()
            if trimmed.startswith(dropped):
                continue
            if trimmed.startswith("<http_port>"):
                lines.append(f"<http_port>{http_port}</http_port>\n<listen_host>127.0.0.1</listen_host>\n")
            elif trimmed.startswith("<tcp_port>"):
                lines.append(f"<tcp_port>{tcp_port}</tcp_port>\n")
            else:
                lines.append(line.replace("/var/lib/clickhouse/", f"{directory}/data/")
                             .replace("/var/log/clickhouse-server/", f"{directory}/log/"))
    config = os.path.join(directory, "config.xml")
    with open(config, "w") as f:
        f.writelines(lines)
    return config


@contextlib.contextmanager
def clickhouse_server(tmp):
    """A private clickhouse-server; yields (http_port, tcp_port)."""
    binary = next((b for b in CLICKHOUSE_BINARIES if os.path.exists(b)), None)
    if binary is None:
        sys.exit("clickhouse-server is not installed: apt-get install -y clickhouse-server clickhouse-client")
    directory = os.path.join(tmp, "clickhouse")
    os.makedirs(directory)
    http_port, tcp_port = free_port(), free_port()
    config = write_clickhouse_config(directory, http_port, tcp_port)
    process = subprocess.Popen([binary, f"--config-file={config}"], cwd=directory, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def pings():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/ping", timeout=1) as answer:
                    return answer.read() == b"Ok.\n"
            except OSError:
                return False
        wait_until(pings, 30, f"clickhouse-server on {http_port} (see {directory}/log)")
        yield http_port, tcp_port
    finally:
        stop(process)


def clickhouse(http_port, sql, body=None, gzipped=False):
    """POSTs `sql` (with an optional data `body`) to ClickHouse's HTTP interface; returns the answer."""
    url = f"http://127.0.0.1:{http_port}/"
    if body is None:
        data = sql.encode()
    else:
        url += "?" + urllib.parse.urlencode({"query": sql})
        data = body
    headers = {"Content-Encoding": "gzip"} if gzipped else {}
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=300) as answer:
        return answer.read()


def row_count(http_port, table):
    """The rows of `table`, or 0 while it does not exist yet."""
    try:
        return int(clickhouse(http_port, f"SELECT count() FROM {table}"))
    except urllib.error.HTTPError:
        return 0


def routing_key(line):
    """The kafka sink's default key: `namespace/name` for a pod, the name for a node, otherwise
    the entity id; None for an event about no entity."""
    entity = json.loads(line).get("entity")
    if entity is None:
        return None
    if entity["type"] == "pod" and entity.get("namespace") and entity.get("name"):
        return f"{entity['namespace']}/{entity['name']}".encode()
    if entity["type"] == "node" and entity.get("name"):
        return entity["name"].encode()
    return entity["id"].encode()


def demo_source(count):
    """The `demo` source section every scenario shares (reproducible output)."""
    return f"""
[sources.demo]
type = "demo"
count = {count}
seed = 7
start_time = "2026-01-01T00:00:00Z"
"""


def write_config(tmp, name, text):
    """Writes a tapio config with its own data_dir; returns its path."""
    path = os.path.join(tmp, f"{name}.toml")
    with open(path, "w") as f:
        f.write(f'data_dir = "{os.path.join(tmp, "data-" + name)}"\n' + text)
    return path


def start_tapio(config, log_path):
    """Starts `tapio run --summary` under /usr/bin/time, which writes tapio's own peak RSS to
    `<log_path>.rss` when it ends (wait4's rusage of a child forked from this Python process
    would count the pages it shared with us before exec); tapio's log goes to `log_path`."""
    log = open(log_path, "wb")
    process = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", f"{log_path}.rss",
                                TAPIO, "run", "--config", config, "--summary"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    log.close()
    return process


def peak_rss(log_path):
    """Tapio's peak RSS in MiB, as /usr/bin/time wrote it (its last line, in KiB)."""
    with open(f"{log_path}.rss") as f:
        return int(f.read().split()[-1]) / 1024


def summary_row(log_path, component):
    """(events_in, events_out, dropped, errors) of `component` in tapio's --summary table."""
    with open(log_path, errors="replace") as f:
        for line in f:
            cells = line.split()
            if len(cells) == 8 and cells[0] == component and cells[3].isdigit():
                return tuple(int(c) for c in cells[3:7])
    raise BenchError(f"no summary row for {component} in {log_path}")


def warnings(log_path):
    """Tapio's WARN and ERROR log lines, for the report."""
    with open(log_path, errors="replace") as f:
        return [line.rstrip() for line in f if " WARN " in line or " ERROR " in line]


def generate_payloads(tmp, count):
    """Runs demo -> file once: the exact events tapio produces; returns (value, key) pairs."""
    path = os.path.join(tmp, "payloads.ndjson")
    config = write_config(tmp, "generate", demo_source(count) + f"""
[sinks.out]
type = "file"
inputs = ["demo"]
path = "{path}"
""")
    subprocess.run([TAPIO, "run", "--config", config], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    with open(path, "rb") as f:
        lines = [line.rstrip(b"\n") for line in f]
    if len(lines) != count:
        raise BenchError(f"demo -> file wrote {len(lines)} events, not {count}")
    return [(line, routing_key(line)) for line in lines]


def produce(broker, topic, payloads, **options):
    """Produces every (value, key) to `topic` with a confluent-kafka producer; returns the seconds
    from the first produce to the end of flush."""
    failures = []
    producer = Producer({"bootstrap.servers": broker, "queue.buffering.max.messages": 1000000, **options})

    def delivered(err, _message):
        if err is not None:
            failures.append(err)
    started = time.monotonic()
    for value, key in payloads:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    remaining = producer.flush(300)
    seconds = time.monotonic() - started
    if remaining or failures:
        raise BenchError(f"raw producer: {remaining} unconfirmed, {len(failures)} failed: {failures[:3]}")
    return seconds


FETCH_WAIT_MS = 10

# The clickhouse sink as configured out of the box (RowBinary, LZ4), tuned for a server on the
# same host (no compression, inserts of 50k rows: ClickHouse prefers big inserts, and two
# inserts in flight), and in the JSONEachRow format with gzip (the sink's earlier defaults).
B_VARIANTS = [
    ("(b) kafka -> clickhouse", ""),
    ("(b) ... tuned sink", 'compression = "none"\nconcurrency = 2\n'
                           'batch = { max_events = 50000, max_bytes = "64MiB" }\n'
                           'buffer = { max_events = 100000 }'),
    ("(b) ... JSONEachRow gzip", 'format = "json_each_row"\ncompression = "gzip"'),
]


def consume_count(broker, topic, count):
    """Reads `topic` from offset 0 of every partition with a confluent-kafka consumer until
    `count` messages arrived; returns the seconds it took."""
    consumer = Consumer({"bootstrap.servers": broker, "group.id": f"bench-raw-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "fetch.wait.max.ms": FETCH_WAIT_MS})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        started = time.monotonic()
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        seen, last_progress = 0, time.monotonic()
        while seen < count:
            messages = consumer.consume(10000, 1.0)
            for message in messages:
                if message.error() and message.error().code() != KafkaError._PARTITION_EOF:
                    raise BenchError(f"raw consumer: {message.error()}")
                if not message.error():
                    seen += 1
            if messages:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > STALL_SECONDS:
                raise BenchError(f"raw consumer stalled at {seen} of {count} messages")
        return time.monotonic() - started
    finally:
        consumer.close()


def scenario_a(tmp, broker, payloads, run):
    """demo -> kafka: returns (tapio seconds, raw seconds, tapio peak RSS MiB, notes)."""
    count = len(payloads)
    topic = f"bench_a_{run}"
    raw_topic = f"bench_a_raw_{run}"
    create_topic(broker, topic)
    create_topic(broker, raw_topic)
    config = write_config(tmp, f"a{run}", demo_source(count) + f"""
[sinks.kafka]
type = "kafka"
inputs = ["demo"]
bootstrap_servers = "{broker}"
topic = "{topic}"
compression = "zstd"
acks = "all"
""")
    log_path = os.path.join(tmp, f"a{run}.log")
    started = time.monotonic()
    code = start_tapio(config, log_path).wait()
    tapio_seconds = time.monotonic() - started
    peak = peak_rss(log_path)
    if code != 0:
        raise BenchError(f"tapio exited {code}; see {log_path}")
    _, out, dropped, errors = summary_row(log_path, "kafka")
    if (out, dropped, errors) != (count, 0, 0):
        raise BenchError(f"kafka sink sent {out}, dropped {dropped}, errors {errors} of {count}")
    raw_seconds = produce(broker, raw_topic, payloads, **{
        "acks": "all", "enable.idempotence": True, "compression.codec": "zstd", "linger.ms": 5,
        "batch.num.messages": 10000, "batch.size": 1000000})
    return tapio_seconds, raw_seconds, peak, warnings(log_path)


def wait_for_rows(http_port, table, count, process):
    """Polls `SELECT count()` every 100 ms until it reaches `count`; raises when tapio dies or
    no row arrives for STALL_SECONDS."""
    seen, last_progress = 0, time.monotonic()
    while seen < count:
        time.sleep(0.1)
        if process.poll() is not None:
            raise BenchError(f"tapio exited {process.returncode} with {seen} of {count} rows inserted")
        now_seen = row_count(http_port, table)
        if now_seen > seen:
            seen, last_progress = now_seen, time.monotonic()
        elif time.monotonic() - last_progress > STALL_SECONDS:
            raise BenchError(f"stalled: {seen} of {count} rows after {STALL_SECONDS} s without progress")


def terminate_tapio(process):
    """SIGTERMs tapio (the child of /usr/bin/time, which would not forward it) and waits for it
    to drain and exit (SIGKILL after 90 s); returns the exit code."""
    with open(f"/proc/{process.pid}/task/{process.pid}/children") as f:
        children = [int(pid) for pid in f.read().split()]
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    try:
        return process.wait(90)
    except subprocess.TimeoutExpired:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait()
        raise BenchError("tapio did not stop within 90 s of SIGTERM")


def raw_clickhouse(tmp, http_port, tcp_port, count):
    """Dumps tapio's rows and inserts them again into a table of the same schema, once with
    clickhouse-client (native TCP) and once over HTTP in gzip chunks of SINK_BATCH rows;
    returns (client seconds, HTTP seconds)."""
    rows_path = os.path.join(tmp, "rows.ndjson")
    with open(rows_path, "wb") as f:
        f.write(clickhouse(http_port, "SELECT * FROM bench_b FORMAT JSONEachRow"))
    for table in ("bench_raw", "bench_raw_http"):
        clickhouse(http_port, f"DROP TABLE IF EXISTS {table}")
        clickhouse(http_port, f"CREATE TABLE {table} AS bench_b")
    with open(rows_path, "rb") as rows:
        started = time.monotonic()
        subprocess.run(["clickhouse-client", "--port", str(tcp_port), "--query",
                        "INSERT INTO bench_raw FORMAT JSONEachRow"], stdin=rows, check=True)
        client_seconds = time.monotonic() - started
    with open(rows_path, "rb") as f:
        lines = f.readlines()
    bodies = [gzip.compress(b"".join(lines[i:i + SINK_BATCH]), 1) for i in range(0, len(lines), SINK_BATCH)]
    del lines
    started = time.monotonic()
    for body in bodies:
        clickhouse(http_port, "INSERT INTO bench_raw_http FORMAT JSONEachRow", body, gzipped=True)
    http_seconds = time.monotonic() - started
    for table in ("bench_raw", "bench_raw_http"):
        if row_count(http_port, table) != count:
            raise BenchError(f"raw insert into {table} left {row_count(http_port, table)} of {count} rows")
    os.remove(rows_path)
    return client_seconds, http_seconds


def scenario_b(tmp, broker, http_port, tcp_port, topic, count, run, sink_options):
    """kafka -> clickhouse: returns (tapio seconds, raw seconds by name, peak RSS MiB, notes)."""
    clickhouse(http_port, "DROP TABLE IF EXISTS bench_b")
    config = write_config(tmp, f"b{run}", f"""
[sources.kafka]
type = "kafka"
bootstrap_servers = "{broker}"
topics = ["{topic}"]
group_id = "bench-b-{run}-{uuid.uuid4()}"
auto_offset_reset = "earliest"
librdkafka_options = {{ "fetch.wait.max.ms" = "{FETCH_WAIT_MS}" }}
[sinks.clickhouse]
type = "clickhouse"
inputs = ["kafka"]
endpoint = "http://127.0.0.1:{http_port}"
table = "bench_b"
create_table = true
{sink_options}
""")
    log_path = os.path.join(tmp, f"b{run}.log")
    started = time.monotonic()
    process = start_tapio(config, log_path)
    try:
        wait_for_rows(http_port, "bench_b", count, process)
        tapio_seconds = time.monotonic() - started
    finally:
        code = terminate_tapio(process) if process.poll() is None else process.returncode
    peak = peak_rss(log_path)
    notes = warnings(log_path)
    if code != 0:
        notes.append(f"tapio exited {code} after SIGTERM")
    final_rows = row_count(http_port, "bench_b")
    if final_rows != count:
        notes.append(f"bench_b holds {final_rows} rows after the stop, not {count}")
    with contextlib.suppress(BenchError):
        _, out, dropped, errors = summary_row(log_path, "clickhouse")
        if (dropped, errors) != (0, 0):
            notes.append(f"clickhouse sink: {out} out, {dropped} dropped, {errors} errors")
    client_seconds, http_seconds = raw_clickhouse(tmp, http_port, tcp_port, count)
    raw = {"kafka consume": consume_count(broker, topic, count),
           "clickhouse-client insert": client_seconds,
           "HTTP insert (gzip, 10k rows)": http_seconds}
    return tapio_seconds, raw, peak, notes


def scenario_c(tmp, http_port, tcp_port, count, run):
    """demo -> clickhouse: returns (tapio seconds, raw seconds by name, peak RSS MiB, notes)."""
    clickhouse(http_port, "DROP TABLE IF EXISTS bench_b")
    config = write_config(tmp, f"c{run}", demo_source(count) + f"""
[sinks.clickhouse]
type = "clickhouse"
inputs = ["demo"]
endpoint = "http://127.0.0.1:{http_port}"
table = "bench_b"
create_table = true
""")
    log_path = os.path.join(tmp, f"c{run}.log")
    started = time.monotonic()
    code = start_tapio(config, log_path).wait()
    tapio_seconds = time.monotonic() - started
    if code != 0:
        raise BenchError(f"tapio exited {code}; see {log_path}")
    if row_count(http_port, "bench_b") != count:
        raise BenchError(f"bench_b holds {row_count(http_port, 'bench_b')} rows, not {count}")
    client_seconds, http_seconds = raw_clickhouse(tmp, http_port, tcp_port, count)
    raw = {"clickhouse-client insert": client_seconds, "HTTP insert (gzip, 10k rows)": http_seconds}
    return tapio_seconds, raw, peak_rss(log_path), warnings(log_path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500_000, help="events per scenario")
    parser.add_argument("--runs", type=int, default=1, help="runs per scenario (median reported)")
    parser.add_argument("--only", default="a,b,c", help="comma-separated scenarios to run")
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    if not os.path.exists(TAPIO):
        sys.exit(f"{TAPIO} is missing: run cargo build --release")
    if not os.path.exists(TANSU):
        sys.exit(f"{TANSU} is missing: run scripts/test.sh, which installs tansu")

    results = []  # (scenario, tapio rates, raw rates, peaks, raw detail, notes, failure)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as servers:
        broker = servers.enter_context(tansu_broker(tmp))
        payloads = generate_payloads(tmp, args.events)
        size = sum(len(v) for v, _ in payloads)
        print(f"{args.events} demo events, {size / args.events:.0f} bytes/event on average, "
              f"{sum(k is None for _, k in payloads)} without a key")
        if "a" in wanted:
            results.append(run_scenario("(a) demo -> kafka", args.runs, args.events,
                                        lambda run: scenario_a(tmp, broker, payloads, run)))
        if wanted & {"b", "c"}:
            http_port, tcp_port = servers.enter_context(clickhouse_server(tmp))
        if "c" in wanted:
            results.append(run_scenario("(c) demo -> clickhouse", args.runs, args.events,
                                        lambda run: scenario_c(tmp, http_port, tcp_port, args.events, run)))
        if "b" in wanted:
            topic = "bench_b_input"
            create_topic(broker, topic)
            prefill = produce(broker, topic, payloads, **{"acks": "all", "linger.ms": 5})
            print(f"prefilled {topic}: {args.events / prefill:,.0f} events/s (acks=all, no compression)")
            del payloads[:]
            for name, sink_options in B_VARIANTS:
                results.append(run_scenario(name, args.runs, args.events,
                                            lambda run, options=sink_options: scenario_b(
                                                tmp, broker, http_port, tcp_port, topic, args.events, run,
                                                options)))
    report(results)


def run_scenario(name, runs, count, once):
    """Runs `once(run)` `runs` times; returns the scenario's rates (events/s), peaks and notes."""
    tapio, raw, peaks, notes, detail = [], [], [], [], {}
    for run in range(runs):
        print(f"{name}: run {run + 1} of {runs} ...", flush=True)
        try:
            tapio_seconds, raw_seconds, peak, run_notes = once(run)
        except BenchError as error:
            return name, tapio, raw, peaks, detail, notes, str(error)
        if isinstance(raw_seconds, dict):
            for what, seconds in raw_seconds.items():
                detail.setdefault(what, []).append(count / seconds)
            raw_seconds = max(raw_seconds.get("kafka consume", 0), raw_seconds["clickhouse-client insert"])
        tapio.append(count / tapio_seconds)
        raw.append(count / raw_seconds)
        peaks.append(peak)
        notes.extend(run_notes)
    return name, tapio, raw, peaks, detail, notes, None


def report(results):
    """Prints the table, the raw components of each scenario and tapio's warnings."""
    print()
    print(f"{'scenario':<26}{'tapio events/s':>16}{'raw events/s':>16}{'ratio':>8}{'peak RSS MiB':>14}")
    for name, tapio, raw, peaks, detail, notes, failure in results:
        if failure:
            print(f"{name:<26}  FAILED: {failure}")
            continue
        ratio = statistics.median(tapio) / statistics.median(raw)
        print(f"{name:<26}{statistics.median(tapio):>16,.0f}{statistics.median(raw):>16,.0f}"
              f"{ratio:>7.0%}{max(peaks):>14.1f}")
        if len(tapio) > 1:
            print(f"{'':<4}runs: tapio {', '.join(f'{r:,.0f}' for r in tapio)}; raw {', '.join(f'{r:,.0f}' for r in raw)};"
                  f" peak RSS {', '.join(f'{p:.0f}' for p in peaks)} MiB")
        for what, rates in detail.items():
            print(f"{'':<4}raw {what}: {statistics.median(rates):,.0f} events/s")
    for name, *_, notes, _failure in results:
        for note in notes[:20]:
            print(f"{name} note: {note}")


if __name__ == "__main__":
    main()
