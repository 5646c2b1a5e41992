#!/usr/bin/env python3
"""The benchmark behind BENCHMARKS.md; run it through scripts/bench.sh.

For each point W/S it creates, through the real API server and OpenBao, W
opted-in workloads (the three kinds, 20 namespaces, each using 1-5 of S
shared secrets) and W that do not opt in, runs the reloader with 2 s
periods, and measures pass times, requests per pass, memory, the time from
a secret change to the new reload count, and that changing 10% of the
secrets at once reloads exactly the workloads using them, each once.
"""
import argparse
import http.client
import json
import os
import random
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time
import urllib.parse

NAMESPACES = 20
KINDS = [("apps/v1", "deployments", "Deployment"), ("apps/v1", "daemonsets", "DaemonSet"),
         ("apps/v1", "statefulsets", "StatefulSet")]
OPT_IN = "secrets-reloader.security.bank-vaults.io/reload-on-secret-change"
COUNT = "secrets-reloader.security.bank-vaults.io/secret-reload-count"
COLLECTOR = re.compile(r'collector pass: (\d+) workloads opted in, (\d+) API requests, (\d+) ms')
RELOADER = re.compile(r'reloader pass: (\d+) secrets, (\d+) Vault requests, (\d+) reloaded, '
                      r'(\d+) API requests, (\d+) ms')


class Api:
    """A keep-alive JSON client of one server."""

    def __init__(self, url, headers, ca=None):
        parts = urllib.parse.urlsplit(url)
        context = ssl.create_default_context(cafile=ca) if parts.scheme == "https" else None
        self.connect = lambda: (
            http.client.HTTPSConnection(parts.hostname, parts.port, context=context, timeout=120)
            if context else http.client.HTTPConnection(parts.hostname, parts.port, timeout=120))
        self.conn = self.connect()
        self.headers = headers

    def call(self, method, path, body=None, content_type="application/json"):
        data = None if body is None else json.dumps(body).encode()
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in range(3):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                response = self.conn.getresponse()
                raw = response.read()
                return response.status, (json.loads(raw) if raw else None)
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = self.connect()
                if attempt == 2:
                    raise

    def must(self, method, path, body=None, content_type="application/json", ok=(200, 201, 204)):
        status, answer = self.call(method, path, body, content_type)
        if status not in ok:
            sys.exit(f"bench: {method} {path}: {status} {answer}")
        return answer


def workload(kind, namespace, name, opted_in, paths):
    group, _, kind_name = kind
    env = [{"name": f"S{i}", "value": f"vault:{path}#v"} for i, path in enumerate(paths)]
    annotations = {OPT_IN: "true"} if opted_in else {}
    spec = {"selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}, "annotations": annotations},
                         "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1",
                                                  "env": env}]}}}
    if kind_name != "DaemonSet":
        spec["replicas"] = 0
    if kind_name == "StatefulSet":
        spec["serviceName"] = name
    return {"apiVersion": group, "kind": kind_name,
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def namespaces(point):
    return [f"bench-{point}-{n:02d}" for n in range(NAMESPACES)]


def build(kube, bao, w, s, seed):
    """Creates the secrets and workloads of one point; returns who uses what."""
    rng = random.Random(seed)
    prefix = f"bench{w}x{s}"
    for j in range(s):
        bao.must("POST", f"/v1/secret/data/{prefix}/s{j}", {"data": {"v": "1"}})
    for ns in namespaces(w):
        kube.must("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                 "metadata": {"name": ns}})
    uses = {}
    for opted_in in (True, False):
        for i in range(w):
            kind = KINDS[i % 3]
            ns = namespaces(w)[i % NAMESPACES]
            name = f"{'w' if opted_in else 'n'}{i}"
            secrets = rng.sample(range(s), rng.randint(1, min(5, s)))
            paths = [f"secret/data/{prefix}/s{j}" for j in secrets]
            kube.must("POST", f"/apis/apps/v1/namespaces/{ns}/{kind[1]}",
                      workload(kind, ns, name, opted_in, paths))
            if opted_in:
                uses[(kind[1], ns, name)] = set(secrets)
    return prefix, uses


def rss_kib(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def passes(log_path):
    collector, reloader = [], []
    with open(log_path, errors="replace") as log:
        for line in log:
            if m := COLLECTOR.search(line):
                collector.append(tuple(int(g) for g in m.groups()))
            elif m := RELOADER.search(line):
                reloader.append(tuple(int(g) for g in m.groups()))
    return collector, reloader


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    sys.exit(f"bench: timed out waiting for {what}")


def counts(kube, w):
    found = {}
    for ns in namespaces(w):
        for _, plural, _ in KINDS:
            answer = kube.must("GET", f"/apis/apps/v1/namespaces/{ns}/{plural}")
            for item in answer["items"]:
                annotations = item["spec"]["template"]["metadata"].get("annotations") or {}
                if OPT_IN in annotations:
                    found[(plural, ns, item["metadata"]["name"])] = int(annotations.get(COUNT, "0"))
    return found


def storage_lists(kube):
    """The API server's own count of lists of the workload kinds, by where it served them."""
    kube.conn.request("GET", "/metrics", headers=kube.headers)
    response = kube.conn.getresponse()
    text = response.read().decode()
    served = {}
    for line in text.splitlines():
        if line.startswith("apiserver_storage_list_total{") and 'group="apps"' in line:
            storage = re.search(r'storage="([^"]*)"', line).group(1)
            served[storage] = served.get(storage, 0) + int(float(line.rsplit(" ", 1)[1]))
    return served


def run_point(args, kube, bao, w, s):
    print(f"bench: point {w}/{s}: creating {2 * w} workloads and {s} secrets", flush=True)
    lists_before = storage_lists(kube)
    started = time.monotonic()
    prefix, uses = build(kube, bao, w, s, seed=w * 7919 + s)
    distinct = len(set().union(*uses.values()))
    print(f"bench: created in {time.monotonic() - started:.0f} s; {distinct} distinct secrets "
          "in use", flush=True)

    log_path = os.path.join(args.work, f"reloader-{w}.log")
    env = dict(os.environ)
    for name in ("VAULT_TOKEN", "BAO_ADDR", "BAO_TOKEN"):
        env.pop(name, None)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        health_port = probe.getsockname()[1]
    env.update(VAULT_AUTH_METHOD="kubernetes", VAULT_ROLE="vault-secrets-reloader",
               LISTEN_ADDRESS=f"127.0.0.1:{health_port}")
    with open(log_path, "w") as log:
        daemon = subprocess.Popen(
            [args.bin, "--kube-api-url", env["KUBE_API_URL"], "--kube-token-file", args.token,
             "--kube-ca-file", env["KUBE_CA_FILE"], "--collector-sync-period", "2s",
             "--reloader-run-period", "2s"], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        peak_seen = 0
        health_ms = []

        def sample():
            """Memory now, and how long /healthz takes to answer while passes run."""
            nonlocal peak_seen
            rss, hwm = rss_kib(daemon.pid)
            peak_seen = max(peak_seen, hwm)
            asked = time.monotonic()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", health_port, timeout=10)
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                conn.close()
                health_ms.append((time.monotonic() - asked) * 1000)
            except OSError:
                pass
            return rss

        # Baseline: a reloader pass that saw every secret and had nothing left to write.
        def settled():
            sample()
            _, reloader = passes(log_path)
            return len(reloader) >= 2 and reloader[-1][0] == distinct and reloader[-1][3] == 0
        wait_for(settled, 600, "the baseline")
        collector, reloader = passes(log_path)
        first_list = collector[0]
        # Five more passes of each, at rest.
        need_c, need_r = len(collector) + 5, len(reloader) + 5
        wait_for(lambda: (sample() or True) and
                 [len(x) for x in passes(log_path)] >= [need_c, need_r], 300, "steady passes")
        collector, reloader = passes(log_path)
        steady_c, steady_r = collector[-5:], reloader[-5:]
        steady_rss = statistics.median(sample() for _ in range(3))

        # One change: time until the new count is visible.
        latency_secret = next(iter(sorted(uses[next(iter(sorted(uses)))])))
        watcher = next(key for key in sorted(uses) if latency_secret in uses[key])
        plural, ns, name = watcher
        bao.must("POST", f"/v1/secret/data/{prefix}/s{latency_secret}", {"data": {"v": "2"}})
        changed_at = time.monotonic()

        def reloaded():
            sample()
            item = kube.must("GET", f"/apis/apps/v1/namespaces/{ns}/{plural}/{name}")
            return (item["spec"]["template"]["metadata"].get("annotations") or {}).get(COUNT) == "1"
        wait_for(reloaded, 60, "the first reload")
        latency = time.monotonic() - changed_at
        # Let that pass finish with the other workloads using the secret.
        seen = len(passes(log_path)[1])

        def quiet():
            sample()
            later = passes(log_path)[1][seen:]
            return len(later) >= 2 and later[-1][2] == 0
        wait_for(quiet, 300, "the first change to be handled")

        # 10% of the secrets at once.
        others = sorted(set().union(*uses.values()) - {latency_secret})
        batch = set(random.Random(s).sample(others, max(1, len(others) // 10)))
        before = len(passes(log_path)[1])
        for j in sorted(batch):
            bao.must("POST", f"/v1/secret/data/{prefix}/s{j}", {"data": {"v": "2"}})

        def quiet_again():
            sample()
            reloader_passes = passes(log_path)[1][before:]
            return len(reloader_passes) >= 3 and all(p[2] == 0 for p in reloader_passes[-2:])
        wait_for(quiet_again, 600, "the batch to be handled")
        batch_passes = [p for p in passes(log_path)[1][before:] if p[2] > 0]
        expected = {key: int(latency_secret in used) + int(bool(used & batch))
                    for key, used in uses.items()}
        got = counts(kube, w)
        wrong = {key: (got.get(key), want) for key, want in expected.items()
                 if got.get(key, 0) != want}
        batch_reloaded = sum(p[2] for p in batch_passes)
        batch_api = sum(p[3] for p in batch_passes)
        want_reloaded = sum(1 for used in uses.values() if used & batch)
        steady_rss_after = sample()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    lists_after = storage_lists(kube)
    lists = {k: lists_after.get(k, 0) - lists_before.get(k, 0) for k in lists_after}

    return {
        "point": f"{w}/{s}",
        "workloads": 2 * w,
        "distinct": distinct,
        "list_ms": first_list[2],
        "list_requests": first_list[1],
        "watch_ms": statistics.median(p[2] for p in steady_c),
        "watch_requests": statistics.median(p[1] for p in steady_c),
        "reloader_ms": statistics.median(p[4] for p in steady_r),
        "vault_per_pass": statistics.median(p[1] for p in steady_r),
        "api_per_quiet_pass": statistics.median(p[3] for p in steady_r),
        "rss_steady_kib": int(max(steady_rss, steady_rss_after)),
        "rss_peak_kib": peak_seen,
        "health_p50_ms": statistics.median(health_ms),
        "health_max_ms": max(health_ms),
        "health_samples": len(health_ms),
        "latency_s": latency,
        "batch_secrets": len(batch),
        "batch_expected": want_reloaded,
        "batch_reloaded": batch_reloaded,
        "batch_api": batch_api,
        "wrong": len(wrong),
        "lists_by_storage": lists,
        "wrong_examples": list(wrong.items())[:3],
    }


def cleanup(kube):
    """Removes every bench namespace, also those an interrupted run left."""
    def left():
        items = kube.must("GET", "/api/v1/namespaces")["items"]
        return [i["metadata"]["name"] for i in items if i["metadata"]["name"].startswith("bench-")]
    for ns in left():
        kube.call("DELETE", f"/api/v1/namespaces/{ns}")
    wait_for(lambda: not left(), 900, "namespace deletion")


def command_line(*argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def budgets(results):
    """The budgets of the scale issue against what was measured."""
    by_point = {r["point"]: r for r in results}
    lines = ["Budgets:", ""]

    def line(ok, text):
        lines.append(f"- {'met' if ok else '**missed**'}: {text}")
    if (r := by_point.get("1000/1000")):
        line(r["rss_steady_kib"] <= 10 * 1024 and r["rss_peak_kib"] <= 16 * 1024,
             f"1000/1000 memory ≤ 10 MiB at rest, ≤ 16 MiB peak: {r['rss_steady_kib'] / 1024:.1f} / "
             f"{r['rss_peak_kib'] / 1024:.1f} MiB")
        line(r["reloader_ms"] <= 2000,
             f"reloader pass over ~1,000 secrets ≤ 2 s: {r['reloader_ms']:.0f} ms for {r['distinct']}")
        line(r["list_ms"] <= 1000,
             f"collector pass over 2,000 workloads (1,000 opted in) ≤ 1 s: {r['list_ms']} ms (full "
             f"list, pages of 500)")
    if (r := by_point.get("5000/2000")):
        line(r["rss_peak_kib"] <= 24 * 1024,
             f"5000/2000 memory ≤ 24 MiB: {r['rss_peak_kib'] / 1024:.1f} MiB peak")
        line(r["list_ms"] <= 3000,
             f"collector pass over 10,000 workloads ≤ 3 s: {r['list_ms']} ms (full list)")
    for r in results:
        extra = r["batch_api"] - 2 * r["batch_expected"]
        line(r["vault_per_pass"] == r["distinct"] and r["wrong"] == 0,
             f"{r['point']}: Vault requests = distinct paths ({r['vault_per_pass']:.0f} = "
             f"{r['distinct']}); reloads = workloads whose secrets changed ({r['batch_reloaded']} = "
             f"{r['batch_expected']}, each once); API requests for them: one patch and one Event "
             f"each, plus {extra} for conflicts (a workload changed by its controller between "
             f"collection and patch is read again and patched once more)")
    cache = sum(r["lists_by_storage"].get("watchcache", 0) for r in results)
    every = sum(sum(r["lists_by_storage"].values()) for r in results)
    lines.append(f"- measured: lists served from the API server's watch cache: {cache} of {every} "
                 "(its apiserver_storage_list_total for the apps group over the whole run, every "
                 "client included; the daemon asks without resourceVersion and the API server "
                 "answers such paginated lists from its cache)")
    worst = max(r["health_max_ms"] for r in results)
    line(worst <= 1000, f"/healthz within 1 s: slowest answer {worst:.0f} ms (the loop answers "
         "between requests; a watch request holds it for at most 0.8 s)")
    return "\n".join(lines)


def write_markdown(args, results):
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    with open("/proc/meminfo") as f:
        memory = int(next(line.split()[1] for line in f if line.startswith("MemTotal"))) // 1024 ** 2
    kube = json.loads(command_line("kubectl", "version", "-o", "json") or "{}")
    server = kube.get("serverVersion", {}).get("gitVersion", "?")
    rows = []
    for r in results:
        rows.append(
            f"| {r['point']} | {r['workloads']} | {r['distinct']} "
            f"| {r['list_ms']} ms ({r['list_requests']} req) | {r['watch_ms']:.0f} ms ({r['watch_requests']:.0f} req) "
            f"| {r['reloader_ms']:.0f} ms | {r['vault_per_pass']:.0f} | {r['api_per_quiet_pass']:.0f} "
            f"| {r['rss_steady_kib'] / 1024:.1f} MiB | {r['rss_peak_kib'] / 1024:.1f} MiB "
            f"| {r['health_p50_ms']:.1f} / {r['health_max_ms']:.0f} ms "
            f"| {r['latency_s']:.1f} s | {r['batch_secrets']} → {r['batch_reloaded']}/{r['batch_expected']} "
            f"({r['batch_api']} req), {r['wrong']} wrong |")
    text = f"""# Benchmarks

Measured by `scripts/bench.sh` (rerun it to reproduce; it rewrites this file) against the local
control plane and OpenBao of `scripts/testenv.sh`, on {time.strftime('%Y-%m-%d')}.

Machine: {os.cpu_count()} cores ({cpu}), {memory} GiB memory. Kubernetes {server} (kube-apiserver,
etcd and kube-controller-manager on the same machine), {' '.join(command_line('bao', 'version').split()[:2])},
{command_line('rustc', '-V')}; the reloader binary: {os.stat(args.bin).st_size / 1024 ** 2:.1f} MiB, static.

Each point W/S: W opted-in workloads (Deployments, DaemonSets, StatefulSets in turn, over 20
namespaces), each using 1-5 of S shared secrets, plus W workloads that do not opt in. The reloader
runs with both periods at 2 s. Pass times and request counts come from its own log lines
(`collector pass: …`, `reloader pass: …`), medians of 5 passes at rest; memory from
`/proc/PID/status` (VmRSS at rest, VmHWM for the peak).

| W/S | workloads | secrets used | first collector pass (full list) | later collector pass (watch) | reloader pass | Vault req/pass | API req/quiet pass | RSS at rest | RSS peak | /healthz median / max | change → new count | 10% of secrets changed → reloaded/expected |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

{budgets(results)}

How to read it:
- A later collector pass is one watch request per kind, read for at most 0.8 s (the API server
  ends it at 1 s), so its time is about 2.5 s whatever the cluster size; its cost is the
  changes, not the workloads.
- Vault requests per reloader pass equal the distinct secrets in use (one metadata read each);
  a quiet pass sends no API request. Changing 10% of the secrets gives one patch and one Event
  per affected workload, and each is reloaded exactly once ("wrong" counts workloads whose
  reload count differs from what the changes call for).
- "/healthz" is how long the health endpoint took to answer, sampled about five times a second
  through the whole run (passes included): the loop answers it between two requests.
- "change → new count" is from the write in OpenBao to the reload count being visible through
  the API, with a 2 s reloader period.
"""
    with open(args.markdown, "w") as out:
        out.write(text)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", default="100/100,1000/1000,5000/2000")
    parser.add_argument("--bin", required=True)
    parser.add_argument("--token", required=True, help="the reloader's ServiceAccount token file")
    parser.add_argument("--admin-token", required=True, help="a token allowed to create workloads")
    parser.add_argument("--work", required=True)
    parser.add_argument("--markdown", help="write the results table here (BENCHMARKS.md)")
    args = parser.parse_args()
    with open(args.admin_token) as f:
        admin = f.read().strip()
    kube = Api(os.environ["KUBE_API_URL"], {"Authorization": f"Bearer {admin}",
                                            "Accept": "application/json"}, os.environ["KUBE_CA_FILE"])
    bao = Api(os.environ["VAULT_ADDR"], {"X-Vault-Token": os.environ["VAULT_TOKEN"]})
    results = []
    for point in args.points.split(","):
        w, s = (int(x) for x in point.split("/"))
        cleanup(kube)
        try:
            result = run_point(args, kube, bao, w, s)
        finally:
            cleanup(kube)
        print("bench: " + json.dumps(result), flush=True)
        results.append(result)
    if args.markdown:
        write_markdown(args, results)
    failed = [r["point"] for r in results if r["wrong"] or r["vault_per_pass"] != r["distinct"]
              or r["batch_reloaded"] != r["batch_expected"]]
    if failed:
        sys.exit(f"bench: wrong reloads or request counts at {', '.join(failed)}")


if __name__ == "__main__":
    main()
