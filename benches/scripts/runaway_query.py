import json, os, subprocess, threading, time, urllib.request, statistics, sys
"""Health latency while a runaway query runs, and CPU after its timeout (issue 12 point 3).

Usage: python3 benches/scripts/runaway_query.py <path to the sightline binary>
Starts a server on 127.0.0.1:44xxx with --query-timeout 5s in /tmp/m3/data, sends a query
that would run for hours, requests /healthz every 20 ms meanwhile, then samples the server's
CPU (cores busy) every 100 ms for 3 s after the answer. Prints one JSON object."""
BIN = sys.argv[1]
d = "/tmp/m3/data"; subprocess.run(["rm", "-rf", d]); os.makedirs("/tmp/m3", exist_ok=True)
p = subprocess.Popen([BIN, "serve", "--data", d, "--otlp-grpc-addr", "127.0.0.1:44317", "--otlp-http-addr", "127.0.0.1:44318",
                      "--api-addr", "127.0.0.1:44070", "--jaeger-addr", "127.0.0.1:44271", "--pg-addr", "127.0.0.1:44433", "--query-timeout", "5s"],
                     stderr=subprocess.DEVNULL)
api = "http://127.0.0.1:44070"
for _ in range(100):
    try:
        urllib.request.urlopen(api + "/healthz", timeout=1); break
    except Exception: time.sleep(0.1)
def cpu():
    f = open(f"/proc/{p.pid}/stat").read().split(")")[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
def health():
    t = time.perf_counter(); urllib.request.urlopen(api + "/healthz", timeout=10).read(); return (time.perf_counter() - t) * 1000
base = [health() for _ in range(50)]
result = {}
def runaway():
    body = json.dumps({"sql": "SELECT count(*) FROM range(1000000000000) a CROSS JOIN range(1000000) b"}).encode()
    req = urllib.request.Request(api + "/api/v1/sql", data=body, headers={"content-type": "application/json"})
    t = time.perf_counter()
    try:
        urllib.request.urlopen(req, timeout=60); result["status"] = 200
    except urllib.error.HTTPError as e:
        result["status"] = e.code
    result["elapsed"] = time.perf_counter() - t; result["end"] = time.perf_counter()
th = threading.Thread(target=runaway); th.start(); time.sleep(0.3)
during = []
while th.is_alive() and len(during) < 200:
    during.append(health()); time.sleep(0.02)
th.join()
# CPU after the answer: samples each 100 ms for 3 s
samples = []; last = cpu(); lt = time.perf_counter()
for _ in range(30):
    time.sleep(0.1); c = cpu(); t = time.perf_counter()
    samples.append(round((c - last) / (t - lt), 2)); last, lt = c, t
def q(xs, f): xs = sorted(xs); return xs[min(len(xs)-1, int(f*len(xs)))]
print(json.dumps({"runaway_status": result["status"], "runaway_s": round(result["elapsed"], 2),
  "health_idle_p50_ms": round(q(base, .5), 2), "health_idle_p99_ms": round(q(base, .99), 2),
  "health_during_n": len(during), "health_during_p50_ms": round(q(during, .5), 2), "health_during_p99_ms": round(q(during, .99), 2),
  "health_during_max_ms": round(max(during), 2),
  "cpu_cores_busy_after_answer_per_100ms": samples}))
p.terminate(); p.wait()
