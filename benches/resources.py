#!/usr/bin/env python3
"""Measures what the resource requests and limits in distribution/kubernetes/ and the Helm chart
are set from: the release binary running the built-in pipeline (config/examples/default-demo.toml:
demo -> semantic_enrich -> correlate -> impact_assess -> console) at a given event rate for a
given time, sampling its CPU once a second.

Prints, per rate, the peak RSS (the kernel's high-water mark), the mean CPU and the highest
one-second CPU, in cores. Usage:
    cargo build --release --bin tapio
    python3 benches/resources.py [--rates 2000 10000] [--seconds 30] [--tapio target/release/tapio]
"""

import argparse
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU of a live process, from /proc/<pid>/stat (fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_mib(pid):
    """The process's RSS high-water mark so far (VmHWM in /proc/<pid>/status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1)) / 1024


def measure(tapio, rate, seconds):
    example = (ROOT / "config/examples/default-demo.toml").read_text()
    config_text, replaced = re.subn(r"(?m)^rate = .*$", f"rate = {rate}", example)
    if replaced != 1:
        raise SystemExit("default-demo.toml has no `rate = ` line to set")
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as config:
        config.write(config_text)
        config.flush()
        process = subprocess.Popen([tapio, "run", "--config", config.name],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started, last_cpu, peak_cpu = time.monotonic(), 0.0, 0.0
        while time.monotonic() - started < seconds:
            time.sleep(1)
            now_cpu = cpu_seconds(process.pid)
            peak_cpu, last_cpu = max(peak_cpu, now_cpu - last_cpu), now_cpu
        elapsed, rss = time.monotonic() - started, peak_rss_mib(process.pid)
        process.send_signal(signal.SIGINT)
        if process.wait(timeout=60) != 0:
            raise SystemExit(f"tapio exited {process.returncode} at rate {rate}")
    return {"rate": rate, "peak_rss_mib": rss, "mean_cpu": last_cpu / elapsed, "peak_cpu": peak_cpu}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--seconds", type=int, default=30)
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    parser.add_argument("--tapio", default=str(Path(target) / "release" / "tapio"))
    arguments = parser.parse_args()
    print("| events/s | peak RSS | mean CPU | peak 1 s CPU |")
    print("|---|---|---|---|")
    for rate in arguments.rates:
        result = measure(arguments.tapio, rate, arguments.seconds)
        print(f"| {result['rate']} | {result['peak_rss_mib']:.0f} MiB | {result['mean_cpu']:.3f} cores "
              f"| {result['peak_cpu']:.3f} cores |", flush=True)


if __name__ == "__main__":
    main()
