#!/usr/bin/env python3
"""RPCs side by side with the health RPC, under h2load (Debian: nghttp2-client), for an A/B
of two server builds in one run: this VM's speed drifts within minutes, so only ratios taken
in the same minute mean something.

    python3 benches/h2load.py RUNS DURATION BINARY [BINARY ...]
    python3 benches/h2load.py 5 5s /tmp/tb-before target/release/token-broker

For each binary it starts `serve` on a fresh data dir (127.0.0.1:50071), mints one access token
with the bootstrap admin key (curl, HTTP/2 prior knowledge), then in every run, binaries
interleaved, drives with h2load (4 connections, 16 streams each, DURATION after 1 s warm-up):
- `health`: grpc.health.v1.Health/Check, no credential;
- `introspect`: TokenService/IntrospectToken of that one (cached) token, with the admin key;
- `mint-key`: TokenService/CreateAccessToken with the admin key (one read permission, 1 h);
- `check`: envoy.service.auth.v3.Authorization/Check of a GET on a configured route with that
  (cached, allowed) token in the HTTP request's `authorization`, as Envoy sends it.
Prints each run's requests/s and the median of each target and of its ratio to health (the
ratio is taken per run, so health and the target share the minute)."""
import os, shutil, socket, statistics, struct, subprocess, sys, tempfile, time

PORT = 50071
URL = f"http://127.0.0.1:{PORT}"


def varint(n):
    out = b""
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def field(number, data):
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(data)) + data


def frame(message):
    return b"\0" + struct.pack(">I", len(message)) + message


def grpc_call(path, message, secret):
    out = subprocess.run(
        ["curl", "-s", "--http2-prior-knowledge", "-H", "content-type: application/grpc",
         "-H", "te: trailers", "-H", f"authorization: Bearer {secret}",
         "--data-binary", "@-", URL + path],
        input=frame(message), capture_output=True, check=True).stdout
    if len(out) < 5:
        sys.exit(f"{path}: no message in the reply")
    return out[5:]


def first_string(message):
    """Field 1 of a message whose first field is a string (CreateAccessTokenResponse)."""
    assert message[0] == 0x0A, message[:8]
    i, n, shift = 1, 0, 0
    while True:
        b = message[i]
        n |= (b & 0x7F) << shift
        i += 1
        shift += 7
        if not b & 0x80:
            break
    return message[i:i + n].decode()


def wait_port():
    for _ in range(300):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", PORT)) == 0:
                return
        time.sleep(0.05)
    sys.exit("the server did not listen")


def h2load(path, body_file, secret, duration):
    cmd = ["h2load", "-c", "4", "-m", "16", "-D", duration.rstrip("s"), "--warm-up-time", "1",
           "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", body_file]
    if secret:
        cmd += ["-H", f"authorization: Bearer {secret}"]
    out = subprocess.run(cmd + [URL + path], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("finished in"):
            return float(line.split(",")[1].split()[0])
        if line.startswith("requests:") and " 0 succeeded" in line:
            sys.exit(f"{path}: no request succeeded\n{out}")
    sys.exit(f"h2load printed no rate:\n{out}")


TARGETS = {
    "health": "/grpc.health.v1.Health/Check",
    "introspect": "/tokenbroker.v1.TokenService/IntrospectToken",
    "mint-key": "/tokenbroker.v1.TokenService/CreateAccessToken",
    "check": "/envoy.service.auth.v3.Authorization/Check",
}

# One route for `check`: GETs under /orders on orders.mesh.local need `read`.
ENVOY = '{ routes = [ { host = "orders.mesh.local", path_prefix = "/orders", permission = "read" } ] }'


def check_request(token):
    """CheckRequest{attributes{request{http{method, headers{authorization}, path, host}}}}."""
    header = field(1, b"authorization") + field(2, b"Bearer " + token.encode())
    http = (field(2, b"GET") + field(3, header) + field(4, b"/orders/42?expand=1")
            + field(5, b"orders.mesh.local:8080"))
    return field(1, field(4, field(2, http)))


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    runs, duration, binaries = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    work = tempfile.mkdtemp(prefix="h2load-")
    mint = field(2, b"read") + bytes([0x19]) + struct.pack("<d", 1.0)  # permissions, hours
    results = {b: {t: [] for t in TARGETS} for b in binaries}
    ratios = {b: {t: [] for t in TARGETS if t != "health"} for b in binaries}
    for r in range(runs):
        for binary in binaries:
            data = os.path.join(work, "data")
            shutil.rmtree(data, ignore_errors=True)
            server = subprocess.Popen(
                [binary, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{PORT}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"),
                         TOKEN_BROKER_ENVOY=ENVOY))
            try:
                wait_port()
                secret = open(os.path.join(data, "bootstrap-admin.key")).read().strip()
                token = first_string(grpc_call(TARGETS["mint-key"], mint, secret))
                bodies = {"health": b"", "introspect": field(1, token.encode()), "mint-key": mint,
                          "check": check_request(token)}
                rates = {}
                for target, path in TARGETS.items():
                    body_file = os.path.join(work, f"{target}.bin")
                    with open(body_file, "wb") as f:
                        f.write(frame(bodies[target]))
                    rates[target] = h2load(path, body_file,
                                           None if target in ("health", "check") else secret,
                                           duration)
                    results[binary][target].append(rates[target])
                for target in ratios[binary]:
                    ratios[binary][target].append(rates[target] / rates["health"])
                print(f"run {r + 1} {binary}: " + ", ".join(
                    f"{t} {v:,.0f}/s" for t, v in rates.items()), flush=True)
            finally:
                server.terminate()
                server.wait()
    print()
    for binary in binaries:
        med = {t: statistics.median(v) for t, v in results[binary].items()}
        rat = {t: statistics.median(v) for t, v in ratios[binary].items()}
        print(f"{binary}: " + ", ".join(f"{t} {v:,.0f}/s" for t, v in med.items())
              + "; per-run ratio to health (median): "
              + ", ".join(f"{t} {v:.2f}" for t, v in rat.items()))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
