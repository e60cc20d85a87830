#!/usr/bin/env python3
"""Overhead of the `ebpf` source on the workloads it watches (needs root).

Times two workloads with and without `tapio run` attached (default programs -> blackhole), in
alternating order over several rounds, and reports the median wall times, their ratio, the
events the source sent, its events/s while the workload ran, and the records lost to a full
ring buffer (`ring_buffer_full` drops):
  exec     N spawns of /bin/true from a shell loop      (exec + exit: 2 events per spawn)
  connect  N TCP connections to a 127.0.0.1 listener    (connect + 2 closes: 3 events each)
Then a flood: several loops connecting to a closed loopback port (connect + error: 2 events per
attempt, no accept to slow them down) for a few seconds, for the rate the source sustains into
blackhole and whether it loses anything at that rate.
Only loopback is used.
Usage: sudo python3 benches/ebpf_overhead.py [--spawns N] [--connects N] [--rounds R]
                                            [--flood-seconds S] [--no-build]
"""
import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAPIO = os.path.join(ROOT, "target", "release", "tapio")
SOURCE = "node"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exec_workload(n):
    """n fork+exec of /bin/true from one shell: the exec-heavy case."""
    script = f"i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done"
    start = time.monotonic()
    subprocess.run(["/bin/sh", "-c", script], check=True)
    return time.monotonic() - start


def connect_loop(port, n):
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port)):
            pass


def connect_workload(n, port):
    """n connect/close pairs against the listener on `port`: the connect-heavy case."""
    start = time.monotonic()
    connect_loop(port, n)
    return time.monotonic() - start


def serve(listener):
    """Accepts and closes connections until the listener is closed."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        conn.close()


class Tapio:
    """`tapio run` with the ebpf source into blackhole, and its counters via /metrics."""

    def __init__(self, tmp, ring_buffer_size):
        self.port = free_port()
        config = os.path.join(tmp, "ebpf.toml")
        with open(config, "w") as f:
            f.write(f"""
[api]
address = "127.0.0.1:{self.port}"

[sources.{SOURCE}]
type = "ebpf"
ring_buffer_size = "{ring_buffer_size}"

[sinks.out]
type = "blackhole"
inputs = ["{SOURCE}"]
""")
        self.process = subprocess.Popen([TAPIO, "run", "--config", config],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"tapio exited ({self.process.returncode}):\n{self.process.stderr.read().decode()}")
            try:
                self.counters()
                return
            except OSError:
                time.sleep(0.1)
        sys.exit("tapio did not serve /metrics within 60 s")

    def counters(self):
        """(events sent, records lost) of the source so far."""
        body = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()

        def total(family, reason=None):
            pattern = family + r'\{component="' + SOURCE + r'"[^}]*' + (f'reason="{reason}"' if reason else "") + r'[^}]*\} (\d+)'
            return sum(int(m) for m in re.findall(pattern, body))

        return total("tapio_component_sent_events_total"), total("tapio_component_discarded_events_total", "ring_buffer_full")

    def settle(self):
        """Counters once the source has caught up with what happened so far: the ring buffer
        is read within milliseconds, so a short pause is enough (the rest of the node keeps
        producing events, so waiting for the counters to stop would never end)."""
        time.sleep(1.0)
        return self.counters()

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=60)


def measured(tapio, work):
    """Runs `work`, returning its wall time and the source's (events, lost, events/s)."""
    before = tapio.settle()
    elapsed = work()
    after = tapio.settle()
    events, lost = after[0] - before[0], after[1] - before[1]
    return elapsed, events, lost, events / elapsed


def flood(tapio, seconds, loops):
    """`loops` parallel loops of refused connects for about `seconds`: the rate the source
    sustains."""
    closed = free_port()
    before = tapio.settle()
    start = time.monotonic()
    workers = [subprocess.Popen([sys.executable, "-c",
                                 "import socket\n"
                                 "while True:\n"
                                 "    try:\n"
                                 f"        socket.create_connection(('127.0.0.1', {closed})).close()\n"
                                 "    except ConnectionRefusedError:\n"
                                 "        pass\n"])
               for _ in range(loops)]
    time.sleep(seconds)
    for worker in workers:
        worker.kill()
        worker.wait()
    elapsed = time.monotonic() - start
    after = tapio.settle()
    return (after[0] - before[0]) / elapsed, after[1] - before[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spawns", type=int, default=20_000)
    parser.add_argument("--connects", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds (medians reported)")
    parser.add_argument("--flood-seconds", type=float, default=5.0)
    parser.add_argument("--flood-loops", type=int, default=2, help="parallel connect loops in the flood")
    parser.add_argument("--ring-buffer-size", default="8MiB")
    parser.add_argument("--no-build", action="store_true", help="use the existing release binary")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("the ebpf source needs root")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "tapio"], cwd=ROOT, check=True)

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    threading.Thread(target=serve, args=(listener,), daemon=True).start()

    workloads = {
        "exec": lambda: exec_workload(args.spawns),
        "connect": lambda: connect_workload(args.connects, port),
    }
    bare = {name: [] for name in workloads}
    watched = {name: [] for name in workloads}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            # Alternate which goes first so that drift (caches, thermal) favours neither.
            for attached in ([False, True] if round_ % 2 == 0 else [True, False]):
                if not attached:
                    for name, work in workloads.items():
                        bare[name].append(work())
                    continue
                tapio = Tapio(tmp, args.ring_buffer_size)
                for name, work in workloads.items():
                    watched[name].append(measured(tapio, work))
                tapio.stop()
        tapio = Tapio(tmp, args.ring_buffer_size)
        flood_rate, flood_lost = flood(tapio, args.flood_seconds, args.flood_loops)
        tapio.stop()
    listener.close()

    print(f"{'workload':<10}{'without':>10}{'with':>10}{'ratio':>8}{'events':>10}{'events/s':>11}{'lost':>7}")
    for name in workloads:
        without = statistics.median(bare[name])
        runs = watched[name]
        with_ = statistics.median(run[0] for run in runs)
        events = statistics.median(run[1] for run in runs)
        rate = statistics.median(run[3] for run in runs)
        lost = sum(run[2] for run in runs)
        print(f"{name:<10}{without:>9.2f}s{with_:>9.2f}s{with_ / without:>8.3f}{events:>10.0f}{rate:>11.0f}{lost:>7}")
    print(f"flood ({args.flood_loops} refused-connect loops, {args.flood_seconds:.0f} s): "
          f"{flood_rate:,.0f} events/s into blackhole, {flood_lost} lost")


if __name__ == "__main__":
    main()
