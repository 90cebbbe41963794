#!/usr/bin/env python3
"""The load campaign behind BENCHMARKS.md (Linux: reads /proc).

    python3 benches/campaign.py TARGET RUNS DURATION [token-broker-load flags]
    python3 benches/campaign.py mint-key 3 8s
    python3 benches/campaign.py introspect 2 6s --pool 150000
    python3 benches/campaign.py mint-key 1 8s --rate 6200 --concurrency 512

Each run starts a fresh release server on /tmp/bench-data (build both binaries first with
`cargo build --release`), runs `token-broker-load --json` once, and reports throughput,
latency and the server's CPU per call: utime + stime from /proc/<pid>/stat, sampled every
100 ms, inside the load tool's measured window only. Prints the median over the runs and
writes every report to /tmp/campaign-TARGET.json."""
import json, os, shutil, socket, statistics, subprocess, sys, threading, time
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "token-broker")
LOAD = os.path.join(ROOT, "target", "release", "token-broker-load")
DATA = "/tmp/bench-data"
TICK = os.sysconf("SC_CLK_TCK")
def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return int(parts[11]) + int(parts[12])
def run(target, runs, dur, extra, conc=64, conns=4, rate=None):
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 50051)) == 0:
            sys.exit("127.0.0.1:50051 is in use: stop the broker running there first")
    shutil.rmtree(DATA, ignore_errors=True)
    srv = subprocess.Popen([BIN, "serve", "--data-dir", DATA], cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=open("/tmp/campaign-server.log", "w"),
                           env=dict(os.environ, RUST_LOG="info"))
    time.sleep(2)
    rss_idle = open(f"/proc/{srv.pid}/status").read().split("VmRSS:")[1].split()[0]
    samples = []; stop = False
    def sampler():
        while not stop:
            samples.append((time.time(), ticks(srv.pid))); time.sleep(0.1)
    th = threading.Thread(target=sampler); th.start()
    out = []
    for i in range(runs):
        load = os.popen("cut -d' ' -f1 /proc/loadavg").read().strip()
        warmup = [] if "--warmup" in extra else ["--warmup", "2s"]
        cmd = [LOAD, "--target", target, "--data-dir", DATA, "--duration", dur,
               "--concurrency", str(conc), "--connections", str(conns), "--json"] + warmup + extra
        if rate: cmd += ["--rate", str(rate)]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            srv.terminate(); stop = True
            sys.exit(f"token-broker-load failed: {done.stderr.strip()}")
        r = json.loads(done.stdout)
        ws, we = r["window_start_unix"], r["window_end_unix"]
        inside = [s for s in samples if ws <= s[0] <= we]
        cpu = (inside[-1][1] - inside[0][1]) / TICK if len(inside) > 2 else float("nan")
        secs = inside[-1][0] - inside[0][0] if len(inside) > 2 else float("nan")
        calls = r["successes"] + r["error_total"]
        r["cpu_us_per_call"] = cpu / (calls * secs / r["elapsed_secs"]) * 1e6 if calls else float("nan")
        r["server_cores"] = cpu / secs
        r["loadavg"] = load
        out.append(r)
        l = r["latency_us"]
        print(f"{target:16} run{i+1} rps={r['requests_per_sec']:8.0f} p50={l['p50']/1000:.2f} p99={l['p99']/1000:.2f} p999={l['p999']/1000:.2f} max={l['max']/1000:.1f} ms errors={r['error_total']} cpu/call={r['cpu_us_per_call']:.0f}us cores={r['server_cores']:.2f} load={load}", flush=True)
    stop = True; th.join()
    srv.terminate(); srv.wait()
    return out, rss_idle
if __name__ == "__main__":
    for b in (BIN, LOAD):
        if not os.access(b, os.X_OK):
            sys.exit(f"{b} is missing: build both binaries first with `cargo build --release`")
    target = sys.argv[1]; runs = int(sys.argv[2]); dur = sys.argv[3]
    extra = sys.argv[4:]
    rate = None
    if "--rate" in extra:
        i = extra.index("--rate"); rate = extra[i+1]; extra = extra[:i] + extra[i+2:]
    conc = 64
    if "--concurrency" in extra:
        i = extra.index("--concurrency"); conc = extra[i+1]; extra = extra[:i] + extra[i+2:]
    out = []
    for _ in range(runs):
        o, rss = run(target, 1, dur, extra, conc=conc, rate=rate)
        out += o
    rps = sorted(r["requests_per_sec"] for r in out)
    print(f"{target:16} MEDIAN rps={statistics.median(rps):.0f} (min {rps[0]:.0f}, max {rps[-1]:.0f}) idle_rss={rss}kB")
    json.dump(out, open(f"/tmp/campaign-{target}{'-rate'+rate if rate else ''}.json", "w"))
