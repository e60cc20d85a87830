#!/usr/bin/env python3
"""End-to-end throughput of the real `tapio` binary (release build).

Runs each scenario several times and reports the median events/s and the peak RSS:
  (a) demo -> blackhole            (10M events by default)
  (b) stdin NDJSON -> blackhole    (a corpus of demo events, ~300 bytes each)
  (c) stdin NDJSON -> file
  (d) demo -> semantic_enrich -> correlate -> impact_assess -> blackhole
Usage: python3 benches/e2e.py [--events N] [--corpus N] [--intelligence N] [--runs R] [--only a,b,c,d]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAPIO = os.path.join(ROOT, "target", "release", "tapio")


def run_measured(config, stdin_path=None):
    """Runs tapio under /usr/bin/time to get this run's own peak RSS."""
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    start = time.monotonic()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", TAPIO, "run", "--config", config],
                          stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.monotonic() - start
    if stdin_path:
        stdin.close()
    if done.returncode != 0:
        sys.exit(f"tapio failed ({done.returncode}):\n{done.stderr.decode()}")
    peak_kib = int(done.stderr.decode().strip().splitlines()[-1])
    return elapsed, peak_kib / 1024


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000, help="events for demo -> blackhole")
    parser.add_argument("--corpus", type=int, default=3_000_000, help="events in the stdin corpus")
    parser.add_argument("--intelligence", type=int, default=10_000_000,
                        help="events for demo -> enrich -> correlate -> impact -> blackhole")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario (median reported)")
    parser.add_argument("--only", default="a,b,c,d", help="comma-separated scenarios to run")
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "tapio"], cwd=ROOT, check=True)

    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.ndjson")
        gen = write(os.path.join(tmp, "gen.toml"), f"""
[sources.demo]
type = "demo"
count = {args.corpus}
seed = 1
start_time = "2026-11-27T00:00:00Z"
[sinks.out]
type = "file"
inputs = ["demo"]
path = "{corpus}"
""")
        wanted = set(args.only.split(","))
        if wanted & {"b", "c"}:
            run_measured(gen)
            size = os.path.getsize(corpus)
            print(f"corpus: {args.corpus} events, {size / args.corpus:.0f} bytes/event on average")

        out = os.path.join(tmp, "out.ndjson")
        scenarios = [
            ("(a) demo -> blackhole", args.events, write(os.path.join(tmp, "a.toml"), f"""
[sources.demo]
type = "demo"
count = {args.events}
[sinks.void]
type = "blackhole"
inputs = ["demo"]
"""), None),
            ("(b) stdin -> blackhole", args.corpus, write(os.path.join(tmp, "b.toml"), """
[sources.in]
type = "stdin"
[sinks.void]
type = "blackhole"
inputs = ["in"]
"""), corpus),
            ("(c) stdin -> file", args.corpus, write(os.path.join(tmp, "c.toml"), f"""
[sources.in]
type = "stdin"
[sinks.out]
type = "file"
inputs = ["in"]
path = "{out}"
"""), corpus),
            ("(d) demo -> intelligence", args.intelligence, write(os.path.join(tmp, "d.toml"), f"""
[sources.demo]
type = "demo"
count = {args.intelligence}
seed = 1
start_time = "2026-11-27T00:00:00Z"
[transforms.enrich]
type = "semantic_enrich"
inputs = ["demo"]
[transforms.correlate]
type = "correlate"
inputs = ["enrich"]
[transforms.impact]
type = "impact_assess"
inputs = ["correlate"]
[sinks.void]
type = "blackhole"
inputs = ["impact"]
"""), None),
        ]
        scenarios = [s for s in scenarios if s[0][1] in wanted]
        print(f"{'scenario':<26}{'median events/s':>16}{'runs events/s':>40}{'peak RSS MiB':>14}")
        for name, count, config, stdin_path in scenarios:
            rates, peaks = [], []
            for _ in range(args.runs):
                if os.path.exists(out):
                    os.remove(out)
                elapsed, peak = run_measured(config, stdin_path)
                rates.append(count / elapsed)
                peaks.append(peak)
            runs = ", ".join(f"{r / 1e6:.2f}M" for r in rates)
            print(f"{name:<26}{statistics.median(rates) / 1e6:>15.2f}M{runs:>40}{max(peaks):>14.1f}")


if __name__ == "__main__":
    main()
