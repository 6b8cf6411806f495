#!/usr/bin/env bash
# Soak bench (issue 21 item 10; not CI): the real `ztbridge serve` under
# steady load for SOAK_MINUTES (default 30) while the sink flaps (down
# SOAK_FLAP_DOWN s every SOAK_FLAP_EVERY s; default 30 s every 5 min).
# Every 10 s the service's RSS and open fds go to a CSV.  At the end the
# load stops, the sink stays up, the backlog drains, and it reports:
# RSS and fd slopes (least squares, per hour), events lost (accepted but
# never received by the sink) and stuck (open deliveries after the drain).
#
#   bash benches/soak/soak.sh                 # 30 minutes
#   SOAK_MINUTES=2 bash benches/soak/soak.sh  # short mode (flaps every 60 s)
#
# Env: ZTBRIDGE_BIN (default target/release/ztbridge, else target/debug),
# SOAK_RATE webhooks/s (20), SOAK_OUT directory (target/soak).
set -euo pipefail
cd "$(dirname "$0")/../.."
MIN=${SOAK_MINUTES:-30}
RATE=${SOAK_RATE:-20}
if [ "$MIN" -lt 10 ]; then EVERY=${SOAK_FLAP_EVERY:-60}; else EVERY=${SOAK_FLAP_EVERY:-300}; fi
DOWN=${SOAK_FLAP_DOWN:-30}
BIN=${ZTBRIDGE_BIN:-}
[ -n "$BIN" ] || { [ -x target/release/ztbridge ] && BIN=target/release/ztbridge || BIN=target/debug/ztbridge; }
OUT=${SOAK_OUT:-target/soak}
rm -rf "$OUT"; mkdir -p "$OUT/data"
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
PORT=$(free_port); SINK=$(free_port)
cat > "$OUT/ztbridge.toml" <<TOML
listen = "127.0.0.1:$PORT"
data_dir = "$OUT/data"
[delivery]
dedupe_window_secs = 0
max_backoff_ms = 10000
[[route]]
name = "pagerduty"
transform = "builtin:pagerduty"
allow_http = true
private_networks = ["127.0.0.1/32"]
[route.config]
routing_key = "R0123456789ABCDEF0123456789ABCDEF"
url = "http://127.0.0.1:$SINK/v2/enqueue"
TOML
# The sink: 202 for each event, its dedup_key appended to a file.
cat > "$OUT/sink.py" <<'PY'
import http.server, json, sys
out = open(sys.argv[2], "a", buffering=1)
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        try: out.write(json.loads(body).get("dedup_key", "?") + "\n")
        except Exception: pass
        self.send_response(202); self.send_header("content-type", "application/json"); self.end_headers()
        self.wfile.write(b'{"status":"success"}')
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
# The load: RATE webhooks/s, each a distinct event; 202s counted.
cat > "$OUT/load.py" <<'PY'
import json, sys, time, urllib.request
port, rate, secs, fixture, out = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
base = json.load(open(fixture)); ok = other = 0; t0 = time.time(); n = 0
while time.time() - t0 < secs:
    n += 1; base["id"] = f"SOAK-{n}"
    req = urllib.request.Request(f"http://127.0.0.1:{port}/webhook", json.dumps(base).encode(), {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r: ok += r.status == 202
    except Exception: other += 1
    time.sleep(max(0, t0 + n / rate - time.time()))
open(out, "w").write(f"{ok} {other}\n")
PY
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
start_sink() { python3 "$OUT/sink.py" "$SINK" "$OUT/received.txt" & SINK_PID=$!; }
start_sink
ZTBRIDGE_PAGERDUTY_ROUTING_KEY=R0123456789ABCDEF0123456789ABCDEF RUST_LOG=warn \
  "$BIN" serve --config "$OUT/ztbridge.toml" 2> "$OUT/serve.log" & SVC=$!; PIDS+=("$SVC")
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.2; done
SECS=$((MIN * 60))
python3 "$OUT/load.py" "$PORT" "$RATE" "$SECS" tests/fixtures/events/critical-lockout.json "$OUT/load.txt" & LOAD=$!; PIDS+=("$LOAD")
echo "t_s,rss_kb,fds,queue_depth" > "$OUT/samples.csv"
T0=$(date +%s); NEXT_FLAP=$EVERY; UP_AT=0
while kill -0 "$LOAD" 2>/dev/null; do
  T=$(( $(date +%s) - T0 ))
  RSS=$(awk '/VmRSS/{print $2}' "/proc/$SVC/status"); FDS=$(ls "/proc/$SVC/fd" | wc -l)
  Q=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^ztbridge_queue_depth /{print $2}')
  echo "$T,$RSS,$FDS,${Q:-}" >> "$OUT/samples.csv"
  if [ "$UP_AT" -eq 0 ] && [ "$T" -ge "$NEXT_FLAP" ]; then kill "$SINK_PID"; UP_AT=$((T + DOWN)); echo "t=${T}s sink down"; fi
  if [ "$UP_AT" -gt 0 ] && [ "$T" -ge "$UP_AT" ]; then start_sink; UP_AT=0; NEXT_FLAP=$((T + EVERY - DOWN)); echo "t=${T}s sink up"; fi
  sleep 10
done
[ "$UP_AT" -gt 0 ] && start_sink
PIDS+=("$SINK_PID")
# Drain: wait (up to 5 min) for no open delivery.
for _ in $(seq 300); do
  Q=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^ztbridge_queue_depth /{print $2}')
  [ "${Q:-1}" = "0" ] && break; sleep 1
done
python3 - "$OUT" "${Q:-?}" <<'PY'
import sys
out, stuck = sys.argv[1], sys.argv[2]
rows = [l.strip().split(",") for l in open(f"{out}/samples.csv").readlines()[1:] if l.strip()]
t = [float(r[0]) for r in rows]; rss = [float(r[1]) for r in rows]; fds = [float(r[2]) for r in rows]
def slope(x, y):
    n = len(x); mx, my = sum(x)/n, sum(y)/n
    d = sum((a-mx)**2 for a in x) or 1
    return sum((a-mx)*(b-my) for a, b in zip(x, y)) / d * 3600
ok, other = map(int, open(f"{out}/load.txt").read().split())
got = set(l.strip() for l in open(f"{out}/received.txt")) if __import__("os").path.exists(f"{out}/received.txt") else set()
print(f"samples {len(rows)} over {t[-1]:.0f} s; RSS {rss[0]/1024:.1f} -> {rss[-1]/1024:.1f} MiB (slope {slope(t,rss)/1024:+.2f} MiB/h, max {max(rss)/1024:.1f}); fds {fds[0]:.0f} -> {fds[-1]:.0f} (slope {slope(t,fds):+.1f}/h, max {max(fds):.0f})")
print(f"accepted {ok} (other answers {other}); distinct events at the sink {len(got)}; lost {max(0, ok - len(got))}; stuck (open after drain) {stuck}")
PY
echo "CSV: $OUT/samples.csv"
