#!/usr/bin/env python3
"""The chained plugin's cost and the cni source's rate, measured (run as root from the repo root):

    python3 benches/cni_plugin.py TAPIO TAPIO_CNI N

Starts `TAPIO run` with a cni source (watch mode on a temp cache dir, and the plugin socket) into
a file sink, then (1) executes TAPIO_CNI N times ADD and N times DEL, as the last plugin of a
chain, with a bridge-shaped prevResult, timing each call (the latency it adds to a pod's network
setup). Prints p50/p99 per call and the events/s
the agent recorded. Only the loopback-free temp dir and a unix socket are used.
"""
import json, os, subprocess, sys, tempfile, time

tapio, plugin, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
d = tempfile.mkdtemp()
sock, out = f"{d}/cni.sock", f"{d}/events.ndjson"
cache, ipam = f"{d}/results", f"{d}/networks"
cfg = f"""[sources.cni]
type = "cni"
cache_dir = "{cache}"
ipam_dir = "{ipam}"
socket_path = "{sock}"
[sinks.out]
type = "file"
inputs = ["cni"]
path = "{out}"
"""
open(f"{d}/tapio.toml", "w").write(cfg)
agent = subprocess.Popen([tapio, "run", "--config", f"{d}/tapio.toml"], stderr=subprocess.DEVNULL)
while not os.path.exists(sock):
    time.sleep(0.05)

def count():
    try:
        return sum(1 for _ in open(out))
    except FileNotFoundError:
        return 0

def wait_for(total):
    while count() < total:
        time.sleep(0.01)

prev = {"cniVersion": "1.0.0", "interfaces": [{"name": "cni0"}, {"name": "veth0"}, {"name": "eth0", "sandbox": "/var/run/netns/x"}],
        "ips": [{"address": "10.244.1.15/24", "gateway": "10.244.1.1", "interface": 2}], "dns": {}}
conf = json.dumps({"cniVersion": "1.0.0", "name": "bench", "type": "tapio-cni", "socket_path": sock, "prevResult": prev}).encode()
took = []
start = time.monotonic()
for i in range(n):
    for command in ("ADD", "DEL"):
        env = dict(os.environ, CNI_COMMAND=command, CNI_CONTAINERID=f"{i:064x}", CNI_NETNS="/var/run/netns/x",
                   CNI_IFNAME="eth0", CNI_ARGS=f"K8S_POD_NAMESPACE=b;K8S_POD_NAME=p{i};K8S_POD_UID=u{i}", CNI_PATH="/usr/lib/cni")
        t = time.monotonic()
        r = subprocess.run([plugin], input=conf, env=env, capture_output=True)
        took.append(time.monotonic() - t)
        assert r.returncode == 0, r.stdout
wait_for(2 * n)
plugin_rate = 2 * n / (time.monotonic() - start)
took.sort()
p = lambda q: took[int(q * (len(took) - 1))] * 1000
print(f"tapio-cni per call: p50 {p(0.5):.2f} ms, p99 {p(0.99):.2f} ms ({len(took)} calls)")
print(f"plugin mode: {plugin_rate:.0f} events/s recorded (bounded by one process per call)")

agent.terminate()
agent.wait()
