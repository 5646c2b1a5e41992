#!/usr/bin/env python3
"""The benchmark behind BENCHMARKS.md; run it through scripts/bench.sh.

For each point W/S it creates, through the real API server and OpenBao, W
opted-in workloads (the three kinds, 20 namespaces, each using 1-5 of S
shared secrets) and W that do not opt in, runs the reloader with 2 s
periods, and measures pass times, requests per pass, memory, the time from
a secret change to the new reload count, and that changing 10% of the
secrets at once reloads exactly the workloads using them, each once.
A point nsN:W/S spreads the workloads over N namespaces and gives the
daemon `--namespaces` naming them all, with its RBAC bound per namespace.
At rest (no change under way) it measures the collector's loop time and
requests per pass, the watches open, the daemon's CPU time, and the time
from a workload created to it being in the index; through the whole run,
/healthz latency about every 20 ms. After the daemon stops, one pass of one
read per secret on loopback and the same with a round trip added before
OpenBao: a pass at a distance.
"""
import argparse
import http.client
import json
import multiprocessing
import os
import random
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
import typing
import urllib.parse

NAMESPACES = 20
KINDS = [("apps/v1", "deployments", "Deployment"), ("apps/v1", "daemonsets", "DaemonSet"),
         ("apps/v1", "statefulsets", "StatefulSet")]
# Keys per page of the daemon's listings (src/vault/listing.rs, PAGE).
LIST_PAGE = 50
OPT_IN = "secrets-reloader.security.bank-vaults.io/reload-on-secret-change"
COUNT = "secrets-reloader.security.bank-vaults.io/secret-reload-count"
# How often /healthz is asked, on average (seconds).
HEALTH_EVERY = 0.02
COLLECTOR = re.compile(r'collector pass: (\d+) workloads opted in, (\d+) API requests, (\d+) ms'
                       r'(?:, (\d+) watch events since the last pass, (\d+)/(\d+) watches open)?')
RELOADER = re.compile(r'reloader pass: (\d+) secrets, (\d+) Vault requests, (\d+) reloaded, '
                      r'(\d+) API requests, (\d+) ms, (\d+)% of the period')
# The daemon's warning that a pass outlasted its period (src/cost.rs).
OUTLASTED = 'msg="reloader pass took '
# The daemon's periods, both (ms).
PERIOD_MS = 2000
# The round trip added before OpenBao for a pass at a distance (ms).
ADDED_ROUND_TRIP_MS = 5


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


def workload(kind, namespace, name, opted_in, paths, config_map=None):
    group, _, kind_name = kind
    env = [{"name": f"S{i}", "value": f"vault:{path}#v"} for i, path in enumerate(paths)]
    annotations = {OPT_IN: "true"} if opted_in else {}
    spec = {"selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}, "annotations": annotations},
                         "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1",
                                                  "env": env}]}}}
    if config_map:
        container = spec["template"]["spec"]["containers"][0]
        container["envFrom"] = [{"configMapRef": {"name": config_map}}]
    if kind_name != "DaemonSet":
        spec["replicas"] = 0
    if kind_name == "StatefulSet":
        spec["serviceName"] = name
    return {"apiVersion": group, "kind": kind_name,
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


class Point(typing.NamedTuple):
    """A benchmark point: `w` opted-in workloads (and `w` that do not opt
    in) using `s` shared secrets, spread over `spread` namespaces; with
    `namespaced` the daemon is given `--namespaces` naming them all. With
    `cms`, as many ConfigMaps of 1 KiB, of which the first `cm_refs` hold a
    reference each and are named (envFrom) by one opted-in workload each."""
    w: int
    s: int
    spread: int = NAMESPACES
    namespaced: bool = False
    cms: int = 0
    cm_refs: int = 0

    @property
    def label(self):
        base = f"ns{self.spread}:{self.w}/{self.s}" if self.namespaced else f"{self.w}/{self.s}"
        return f"{base}+cm{self.cms}:{self.cm_refs}" if self.cms else base

    @property
    def tag(self):
        base = f"ns{self.spread}-{self.w}" if self.namespaced else f"{self.w}"
        return f"{base}-cm{self.cms}" if self.cms else base

    def namespaces(self):
        return [f"bench-{self.tag}-{n:03d}" for n in range(self.spread)]


POINT = re.compile(r'(?:ns(\d+):)?(\d+)/(\d+)(?:\+cm(\d+):(\d+))?')


def parse_points(text):
    """Points from `W/S` (20 namespaces, the daemon watching the whole
    cluster) and `nsN:W/S` (N namespaces, the daemon given `--namespaces`),
    either with `+cmC:R` (C ConfigMaps, R of them named), separated by
    commas."""
    points = []
    for part in text.split(","):
        m = POINT.fullmatch(part.strip())
        if not m or (m.group(1) is not None and int(m.group(1)) < 1):
            sys.exit(f"bench: a point is W/S or nsN:W/S, either with +cmC:R, not {part!r}")
        spread, w, s, cms, refs = m.groups()
        cms, refs = int(cms or 0), int(refs or 0)
        if refs > min(cms, int(w)):
            sys.exit(f"bench: {part!r} names more ConfigMaps than it has, or workloads to name them")
        point = Point(int(w), int(s), int(spread), True) if spread else Point(int(w), int(s))
        points.append(point._replace(cms=cms, cm_refs=refs))
    return points


def create_namespaces(kube, point, subject):
    """The point's namespaces; for a namespaced point each binds the
    daemon's ClusterRole to `subject` (namespace, name) with a RoleBinding,
    as a namespaced install does."""
    for ns in point.namespaces():
        kube.must("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                 "metadata": {"name": ns}})
        if point.namespaced:
            kube.must("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings", {
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "vault-secrets-reloader", "namespace": ns},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": "vault-secrets-reloader"},
                "subjects": [{"kind": "ServiceAccount", "namespace": subject[0],
                              "name": subject[1]}]})


def build(kube, bao, point, seed, subject):
    """Creates the secrets and workloads of one point; returns who uses what."""
    w, s = point.w, point.s
    rng = random.Random(seed)
    prefix = f"bench{point.tag}x{s}"
    for j in range(s):
        bao.must("POST", f"/v1/secret/data/{prefix}/s{j}", {"data": {"v": "1"}})
    create_namespaces(kube, point, subject)
    spread = point.namespaces()
    uses = {}
    for opted_in in (True, False):
        for i in range(w):
            kind = KINDS[i % 3]
            ns = spread[i % len(spread)]
            name = f"{'w' if opted_in else 'n'}{i}"
            secrets = rng.sample(range(s), rng.randint(1, min(5, s)))
            paths = [f"secret/data/{prefix}/s{j}" for j in secrets]
            config_map = None
            if opted_in and i < point.cm_refs:
                # One of its own secrets again: what it uses, and so what
                # the checks expect, is the same with the ConfigMap or not.
                config_map = f"cm{i}"
                create_config_map(kube, ns, config_map, f"vault:{paths[0]}#v")
            kube.must("POST", f"/apis/apps/v1/namespaces/{ns}/{kind[1]}",
                      workload(kind, ns, name, opted_in, paths, config_map))
            if opted_in:
                uses[(kind[1], ns, name)] = set(secrets)
    for c in range(point.cm_refs, point.cms):
        create_config_map(kube, spread[c % len(spread)], f"cm{c}", None)
    return prefix, uses


def create_config_map(kube, namespace, name, reference):
    """A ConfigMap of about 1 KiB, holding `reference` when given."""
    data = {"PADDING": "x" * 1000}
    if reference:
        data["DB_PASS"] = reference
    kube.must("POST", f"/api/v1/namespaces/{namespace}/configmaps",
              {"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": namespace}, "data": data})


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
                collector.append(tuple(None if g is None else int(g) for g in m.groups()))
            elif m := RELOADER.search(line):
                reloader.append(tuple(int(g) for g in m.groups()))
    return collector, reloader


def wait_for(predicate, timeout, what):
    result = poll(predicate, timeout)
    if result is None:
        sys.exit(f"bench: timed out waiting for {what}")
    return result


def counts(kube, point):
    found = {}
    for ns in point.namespaces():
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


class Memory:
    """The daemon's memory, sampled while the benchmark waits."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = 0

    def sample(self):
        """Resident memory now (KiB), keeping the highest peak seen."""
        rss, hwm = rss_kib(self.pid)
        self.peak = max(self.peak, hwm)
        return rss


class Health:
    """Asks /healthz through the whole run at random moments, on average
    every HEALTH_EVERY seconds, each request on a new connection as a
    kubelet probe does. The moments do not wait for answers (a Poisson
    schedule, each request in its own thread): a client that asked again
    right after each answer would keep meeting the daemon's loop at the same
    phase and measure that phase, not what a probe at any moment sees. It
    runs in a process of its own, as a kubelet does: the benchmark's own
    work (parsing the daemon's log, decoding lists of 10,000 workloads)
    holds Python's GIL for many milliseconds at a time, which threads of
    this process would count as the daemon's latency."""

    def __init__(self, port):
        self.port = port
        self.done = multiprocessing.Event()
        self.results, sender = multiprocessing.Pipe(duplex=False)
        self.process = multiprocessing.get_context("fork").Process(
            target=probe_health, args=(port, self.done, sender), daemon=True)

    def start(self):
        self.process.start()

    def stop(self, rest):
        """Stops asking; median, 99th percentile and max in ms, samples and
        errors, over the whole run and over `rest` (a (start, end) of
        time.monotonic(), the same clock in both processes)."""
        self.done.set()
        taken, errors = self.results.recv()
        self.process.join()
        ms = sorted(took for _, took in taken) or [float("nan")]
        at_rest = sorted(took for at, took in taken if rest[0] <= at < rest[1]) or [float("nan")]
        return {"health_p50_ms": statistics.median(ms), "health_p99_ms": percentile_99(ms),
                "health_max_ms": ms[-1], "health_samples": len(taken),
                "health_errors": errors, "health_rest_p50_ms": statistics.median(at_rest),
                "health_rest_p99_ms": percentile_99(at_rest)}


def percentile_99(ms):
    """The 99th percentile of sorted samples `ms`."""
    return ms[min(len(ms) - 1, int(len(ms) * 0.99))]


def probe_health(port, done, results):
    """The body of Health's process: asks until `done`, then sends when
    each answered check was asked and how long it took (ms), and the
    failures after the first answer."""
    rng, at = random.Random(port), time.monotonic()
    taken, errors, asking = [], [], []

    def ask():
        asked = time.monotonic()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            conn.close()
            taken.append((asked, (time.monotonic() - asked) * 1000))
        except OSError:
            # Refused until the listener is bound; counted after that.
            if taken:
                errors.append(asked)

    while not done.is_set():
        at += rng.expovariate(1 / HEALTH_EVERY)
        if done.wait(max(0.0, at - time.monotonic())):
            break
        asking = [t for t in asking if t.is_alive()]
        asking.append(threading.Thread(target=ask, daemon=True))
        asking[-1].start()
    for thread in asking:
        thread.join()
    results.send((taken, len(errors)))


def cpu_ms(pid):
    """CPU time (user and system) the process has used, in ms."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def poll(predicate, timeout, every=0.2):
    """`predicate()` once it is true, or None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(every)
    return None


def measure_rest(pid, log_path, memory, rest_passes):
    """The daemon at rest: waits (at most 10 s) for a collector pass that saw
    no watch event (the controllers done with the new workloads; bookmarks
    count too, so many watches may never give one), then `rest_passes`
    passes of each kind: their times and requests, the watches open, and the
    daemon's CPU ms per second meanwhile."""
    seen = len(passes(log_path)[0])
    poll(lambda: memory.sample() and any(p[3] == 0 for p in passes(log_path)[0][seen:]), 10)
    collector, reloader = passes(log_path)
    first_c, first_r = len(collector), len(reloader)
    cpu_before, at = cpu_ms(pid), time.monotonic()
    wait_for(lambda: memory.sample() and [len(x) for x in passes(log_path)] >=
             [first_c + rest_passes, first_r + rest_passes], 300, "passes at rest")
    until = time.monotonic()
    cpu_per_s = (cpu_ms(pid) - cpu_before) / (until - at)
    collector, reloader = passes(log_path)
    rest_c, steady_r = collector[first_c:], reloader[first_r:]
    return {
        "rest_ms_p50": statistics.median(p[2] for p in rest_c),
        "rest_ms_max": max(p[2] for p in rest_c),
        "rest_requests_p50": statistics.median(p[1] for p in rest_c),
        "rest_requests_max": max(p[1] for p in rest_c),
        "rest_events": sum(p[3] or 0 for p in rest_c),
        "watches": f"{rest_c[-1][4]}/{rest_c[-1][5]}",
        "cpu_ms_per_s": cpu_per_s,
        "reloader_ms": statistics.median(p[4] for p in steady_r),
        "vault_per_pass": statistics.median(p[1] for p in steady_r),
        "api_per_quiet_pass": statistics.median(p[3] for p in steady_r),
        "rss_steady_kib": statistics.median(memory.sample() for _ in range(3)),
        "rest_window": (at, until),
    }


def one_read_per_secret(command, env, work, name):
    """The reloader pass without --list-secret-metadata, from one `--once
    --dry-run` run (nothing is patched) once the daemon has stopped, so
    that neither disturbs the other's numbers, against `env`'s VAULT_ADDR:
    its time, Vault requests (one metadata read per secret) and share of the
    period as logged, and how many times it warned that it outlasted the
    period."""
    log_path = os.path.join(work, f"{name}.log")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with open(log_path, "w") as log:
        subprocess.run(command + ["--once", "--dry-run"], stdout=log, stderr=subprocess.STDOUT,
                       env=dict(env, LISTEN_ADDRESS=f"127.0.0.1:{port}"), timeout=600)
    _, reloader = passes(log_path)
    if not reloader:
        sys.exit(f"bench: the --once run logged no reloader pass (see {log_path})")
    with open(log_path, errors="replace") as log:
        warned = sum(OUTLASTED in line for line in log)
    return {"ms": reloader[-1][4], "requests": reloader[-1][1], "percent": reloader[-1][5],
            "warned": warned}


def at_a_distance(command, env, work, tag, direct):
    """`direct`, a pass of one read per secret, and the same pass with
    ADDED_ROUND_TRIP_MS added to every Vault request by scripts/faultproxy.py
    in mode `slow` before OpenBao; with what is wrong about them: the
    requests differ, or the warning was not said once exactly when the pass
    outlasted the period."""
    vault = urllib.parse.urlsplit(env["VAULT_ADDR"])
    if vault.scheme != "http":
        sys.exit(f"bench: a pass at a distance needs an http:// VAULT_ADDR, not {vault.geturl()}")
    control = os.path.join(work, f"distant-{tag}.mode")
    with open(control, "w") as f:
        f.write("slow\n")
    proxy_cmd = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                              "faultproxy.py"),
                 "--listen", "127.0.0.1:0", "--target", f"{vault.hostname}:{vault.port}",
                 "--control", control, "--slow-ms", str(ADDED_ROUND_TRIP_MS)]
    with open(os.path.join(work, f"distant-{tag}.proxy.log"), "w") as proxy_log:
        proxy = subprocess.Popen(proxy_cmd, stdout=subprocess.PIPE, stderr=proxy_log, text=True)
    try:
        port = proxy.stdout.readline().strip()
        if not port:
            sys.exit(f"bench: the fault proxy did not start (see {proxy_log.name})")
        distant = one_read_per_secret(command, dict(env, VAULT_ADDR=f"http://127.0.0.1:{port}"),
                                      work, f"distant-{tag}")
    finally:
        proxy.terminate()
        proxy.wait()
    if distant["ms"] < distant["requests"] * ADDED_ROUND_TRIP_MS:
        sys.exit(f"bench: {distant['requests']} requests took {distant['ms']} ms in all, less "
                 f"than {ADDED_ROUND_TRIP_MS} ms each: the proxy did not hold them")
    rows = [dict(direct, added_ms=0), dict(distant, added_ms=ADDED_ROUND_TRIP_MS)]
    wrong = [f"+{r['added_ms']} ms: {r['ms']} ms, warned {r['warned']} times" for r in rows
             if r["warned"] != (r["ms"] > PERIOD_MS) and r["ms"] != PERIOD_MS]
    if distant["requests"] != direct["requests"]:
        wrong.append(f"{distant['requests']} requests at a distance, {direct['requests']} not")
    return {"distance": rows, "distance_wrong": wrong}


def list_pages(s, used):
    """The list requests a pass needs for the point's directory of `s`
    secrets s0… when `used` of them are in use, as the daemon lists
    (src/vault/listing.rs): pages of LIST_PAGE keys in byte order, after the first
    key in use without its last character, up to the page holding the last
    key in use."""
    keys = sorted(f"s{j}" for j in range(s))
    names = sorted(f"s{j}" for j in used)
    start = sum(1 for key in keys if key <= names[0][:-1])
    return (keys.index(names[-1]) - start) // LIST_PAGE + 1


def watched_gauge(port):
    """The daemon's watched_workloads gauge, from /metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return int(re.search(r'^vault_secrets_reloader_watched_workloads (\d+)$', text, re.M).group(1))


def measure_create(kube, point, port, probes):
    """Creates `probes` opted-in Deployments (using no secret) one by one,
    at rest, at random moments; for each, the seconds from sending the
    create to /metrics' watched_workloads counting it (asked every 10 ms)."""
    ns, rng = point.namespaces()[0], random.Random(point.w)
    took = []
    for k in range(probes):
        time.sleep(rng.uniform(0.5, 1.5))
        before = watched_gauge(port)
        sent = time.monotonic()
        kube.must("POST", f"/apis/apps/v1/namespaces/{ns}/deployments",
                  workload(KINDS[0], ns, f"probe{k}", True, []))
        counted = poll(lambda: watched_gauge(port) > before and time.monotonic(), 30, 0.01)
        if counted is None:
            sys.exit(f"bench: probe{k} never reached the index")
        took.append(counted - sent)
    return {"create_s": statistics.median(took), "create_max_s": max(took)}


def measure_change(kube, bao, log_path, memory, prefix, uses):
    """Changes one secret: seconds until a workload using it shows the new
    reload count; waits for that change to be handled. Returns the secret too."""
    latency_secret = next(iter(sorted(uses[next(iter(sorted(uses)))])))
    plural, ns, name = next(key for key in sorted(uses) if latency_secret in uses[key])
    bao.must("POST", f"/v1/secret/data/{prefix}/s{latency_secret}", {"data": {"v": "2"}})
    changed_at = time.monotonic()

    def reloaded():
        memory.sample()
        item = kube.must("GET", f"/apis/apps/v1/namespaces/{ns}/{plural}/{name}")
        return (item["spec"]["template"]["metadata"].get("annotations") or {}).get(COUNT) == "1"
    wait_for(reloaded, 60, "the first reload")
    latency = time.monotonic() - changed_at
    # Let that pass finish with the other workloads using the secret.
    seen = len(passes(log_path)[1])

    def quiet():
        memory.sample()
        later = passes(log_path)[1][seen:]
        return len(later) >= 2 and later[-1][2] == 0
    wait_for(quiet, 300, "the first change to be handled")
    return latency, latency_secret


def measure_batch(kube, bao, log_path, memory, point, prefix, uses, latency_secret):
    """Changes 10% of the other secrets at once; checks that exactly the
    workloads using them were reloaded, each once."""
    others = sorted(set().union(*uses.values()) - {latency_secret})
    batch = set(random.Random(point.s).sample(others, max(1, len(others) // 10)))
    before = len(passes(log_path)[1])
    for j in sorted(batch):
        bao.must("POST", f"/v1/secret/data/{prefix}/s{j}", {"data": {"v": "2"}})

    def quiet_again():
        memory.sample()
        reloader_passes = passes(log_path)[1][before:]
        return len(reloader_passes) >= 3 and all(p[2] == 0 for p in reloader_passes[-2:])
    wait_for(quiet_again, 600, "the batch to be handled")
    batch_passes = [p for p in passes(log_path)[1][before:] if p[2] > 0]
    got = counts(kube, point)
    # Once per pass that first saw a secret of theirs changed: the writes
    # take longer than the gap between passes, so a workload using two
    # changed secrets may be reloaded twice, each time for a different one.
    fewest = {key: int(latency_secret in used) + int(bool(used & batch))
              for key, used in uses.items()}
    most = {key: int(latency_secret in used) + len(used & batch) for key, used in uses.items()}
    wrong = {key: (got.get(key, 0), want) for key, want in fewest.items()
             if not want <= got.get(key, 0) <= most[key]}
    return {"batch_secrets": len(batch),
            "batch_expected": sum(1 for used in uses.values() if used & batch),
            "batch_straddled": sum(got.get(key, 0) - want for key, want in fewest.items()
                                   if key not in wrong),
            "batch_reloaded": sum(p[2] for p in batch_passes),
            "batch_api": sum(p[3] for p in batch_passes),
            "wrong": len(wrong), "wrong_examples": list(wrong.items())[:3]}


# The memory limit of the Deployment in manifests/ (MiB).
MANIFEST_MEMORY_LIMIT_MIB = 64
# /metrics clients that ask and then never read, held for a few seconds.
STUCK_CLIENTS = 64


def measure_stuck_metrics_clients(port, memory, hold_s=3.0):
    """Peak RSS (KiB) while STUCK_CLIENTS clients each ask /metrics and never
    read the answer (small receive windows, so the daemon holds the rest),
    and the size of one /metrics answer (bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    size = len(conn.getresponse().read())
    conn.close()
    clients = []
    peak = memory.sample()
    try:
        for _ in range(STUCK_CLIENTS):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
            clients.append(sock)
        end = time.monotonic() + hold_s
        while time.monotonic() < end:
            rss, hwm = rss_kib(memory.pid)
            peak = max(peak, rss, hwm)
            time.sleep(0.1)
    finally:
        for sock in clients:
            sock.close()
    return {"stuck_rss_kib": peak, "metrics_bytes": size}


def progress(point, what):
    print(f"bench: {point.label}: {what} at {time.strftime('%H:%M:%S')}", flush=True)


def identity(args, point):
    """The daemon's token file and OpenBao role, and its extra flags: a
    namespaced point runs as the ServiceAccount bound per namespace only."""
    if not point.namespaced:
        return args.token, "vault-secrets-reloader", []
    return (args.namespaced_token, args.namespaced_role,
            ["--namespaces", ",".join(point.namespaces())])


def run_point(args, kube, bao, point):
    w, s = point.w, point.s
    print(f"bench: point {point.label}: creating {2 * w} workloads in {point.spread} namespaces "
          f"and {s} secrets", flush=True)
    lists_before = storage_lists(kube)
    started = time.monotonic()
    token, role, flags = identity(args, point)
    prefix, uses = build(kube, bao, point, w * 7919 + s + point.namespaced,
                         args.namespaced_account.split("/", 1))
    distinct = len(set().union(*uses.values()))
    print(f"bench: created in {time.monotonic() - started:.0f} s; {distinct} distinct secrets "
          "in use", flush=True)

    log_path = os.path.join(args.work, f"reloader-{point.tag}.log")
    env = dict(os.environ)
    for name in ("VAULT_TOKEN", "BAO_ADDR", "BAO_TOKEN"):
        env.pop(name, None)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        health_port = probe.getsockname()[1]
    env.update(VAULT_AUTH_METHOD="kubernetes", VAULT_ROLE=role,
               LISTEN_ADDRESS=f"127.0.0.1:{health_port}")
    command = [args.bin, "--kube-api-url", env["KUBE_API_URL"], "--kube-token-file", token,
               "--kube-ca-file", env["KUBE_CA_FILE"], "--collector-sync-period",
               f"{PERIOD_MS // 1000}s", "--reloader-run-period", f"{PERIOD_MS // 1000}s", *flags]
    listing = ["--list-secret-metadata"] if args.list_secret_metadata else []
    with open(log_path, "w") as log:
        daemon = subprocess.Popen(command + listing, stdout=log, stderr=subprocess.STDOUT, env=env)
    health = Health(health_port)
    health.start()
    memory = Memory(daemon.pid)
    rest = {}
    try:
        # Baseline: a reloader pass that saw every secret and had nothing left to write.
        def settled():
            memory.sample()
            _, reloader = passes(log_path)
            return len(reloader) >= 2 and reloader[-1][0] == distinct and reloader[-1][3] == 0
        wait_for(settled, 600, "the baseline")
        first_list = passes(log_path)[0][0]
        progress(point, "baseline")
        rest = measure_rest(daemon.pid, log_path, memory, args.rest_passes)
        progress(point, "at rest")
        created = measure_create(kube, point, health_port, args.probes)
        latency, latency_secret = measure_change(kube, bao, log_path, memory, prefix, uses)
        progress(point, "created and changed")
        batch = measure_batch(kube, bao, log_path, memory, point, prefix, uses, latency_secret)
        progress(point, "batch")
        stuck = measure_stuck_metrics_clients(health_port, memory)
        progress(point, f"{STUCK_CLIENTS} /metrics clients that never read")
        rest["rss_steady_kib"] = int(max(rest["rss_steady_kib"], memory.sample()))
    finally:
        health_stats = health.stop(rest.pop("rest_window", (0, 0)))
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    direct = one_read_per_secret(command, env, args.work, f"single-{point.tag}")
    if listing:
        rest.update(single_ms=direct["ms"], single_requests=direct["requests"])
    progress(point, "single reads")
    distance = at_a_distance(command, env, args.work, point.tag, direct)
    progress(point, f"single reads at +{ADDED_ROUND_TRIP_MS} ms")
    lists_after = storage_lists(kube)
    lists = {k: lists_after.get(k, 0) - lists_before.get(k, 0) for k in lists_after}

    return {
        "point": point.label,
        "workloads": 2 * w,
        "namespaces": point.spread,
        "namespaced": point.namespaced,
        "distinct": distinct,
        "vault_expected": list_pages(s, set().union(*uses.values())) if listing else distinct,
        "list_ms": first_list[2],
        "list_requests": first_list[1],
        **rest,
        "rss_peak_kib": memory.peak,
        **health_stats,
        **created,
        "latency_s": latency,
        **batch,
        **stuck,
        **distance,
        "lists_by_storage": lists,
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
        if "single_ms" in r:
            line(r["single_ms"] <= 2000,
                 f"the same without --list-secret-metadata (one read per secret) ≤ 2 s: "
                 f"{r['single_ms']} ms for {r['single_requests']} requests")
        line(r["list_ms"] <= 1000,
             f"collector pass over 2,000 workloads (1,000 opted in) ≤ 1 s: {r['list_ms']} ms (full "
             f"list, pages of 500)")
    if (r := by_point.get("5000/2000")):
        line(r["rss_peak_kib"] <= 24 * 1024,
             f"5000/2000 memory ≤ 24 MiB: {r['rss_peak_kib'] / 1024:.1f} MiB peak")
        line(r["stuck_rss_kib"] <= MANIFEST_MEMORY_LIMIT_MIB * 1024,
             f"5000/2000 with {STUCK_CLIENTS} /metrics clients that never read (an answer of "
             f"{r['metrics_bytes'] / 1024:.0f} KiB each): {r['stuck_rss_kib'] / 1024:.1f} MiB peak, "
             f"under the manifests' {MANIFEST_MEMORY_LIMIT_MIB} MiB limit")
        line(r["list_ms"] <= 3000,
             f"collector pass over 10,000 workloads ≤ 3 s: {r['list_ms']} ms (full list)")
    for r in results:
        extra = r["batch_api"] - 2 * r["batch_reloaded"]
        twice = r.get("batch_straddled", 0)
        asked = (f"list pages up to the last key in use, of {LIST_PAGE} keys"
                 if r["vault_expected"] != r["distinct"] or "single_ms" in r else "distinct paths")
        line(r["vault_per_pass"] == r["vault_expected"] and r["wrong"] == 0
             and r["batch_reloaded"] == r["batch_expected"] + twice,
             f"{r['point']}: Vault requests = {asked} ({r['vault_per_pass']:.0f} = "
             f"{r['vault_expected']}); reloads = workloads whose secrets changed ({r['batch_reloaded']} = "
             f"{r['batch_expected']} + {twice}: each once, and {twice} twice because the batch's "
             f"writes reached them on both sides of a reloader pass); API requests for them: one "
             f"patch and one Event per reload, plus {extra} for conflicts (a workload changed by "
             f"its controller between collection and patch is read again and patched once more)")
    cache = sum(r["lists_by_storage"].get("watchcache", 0) for r in results)
    every = sum(sum(r["lists_by_storage"].values()) for r in results)
    lines.append(f"- measured: lists served from the API server's watch cache: {cache} of {every} "
                 "(its apiserver_storage_list_total for the apps group over the whole run, every "
                 "client included; the daemon asks without resourceVersion and the API server "
                 "answers such paginated lists from its cache)")
    lines += stream_budgets(results)
    lines += distance_budgets(results)
    return "\n".join(lines)


def distance_budgets(results):
    """What a pass at a distance showed: the cost of each added ms of round
    trip, and whether the daemon warned exactly when a pass outlasted its
    period."""
    def added(r):
        near, far = r["distance"]
        return (far["ms"] - near["ms"]) / far["requests"]
    lines = [f"- measured: a pass at a distance, one read per secret at +0 and "
             f"+{ADDED_ROUND_TRIP_MS} ms of round trip: " +
             "; ".join(f"{r['point']}: {r['distance'][0]['ms']} and {r['distance'][1]['ms']} ms, "
                       f"{added(r):.1f} ms more per request" for r in results)]
    wrong = [f"{r['point']} {w}" for r in results for w in r["distance_wrong"]]
    lines.append(f"- {'**missed**' if wrong else 'met'}: a pass longer than its "
                 f"{PERIOD_MS // 1000} s period is warned about once, one within it not, and "
                 f"the added round trip changes no request" +
                 (f": {'; '.join(wrong)}" if wrong else ""))
    return lines


def stream_budgets(results):
    """Issue 11's budgets (the collector's streams) against what was measured."""
    lines = []

    def line(ok, text):
        lines.append(f"- {'met' if ok else '**missed**'}: {text}")

    def each(key, unit, digits=0):
        return "; ".join(f"{r['point']}: {r[key]:.{digits}f}{unit}" for r in results)
    for r in results:
        if (not r["namespaced"] and r["workloads"] >= 10000) or r["namespaces"] >= 100:
            where = (f"{r['namespaces']} namespaces" if r["namespaced"]
                     else f"{r['workloads']:,} workloads, {r['workloads'] // 2:,} opted in")
            line(r["rest_ms_max"] <= 20,
                 f"collector loop time at rest ≤ 20 ms per pass at {where} ({r['point']}): "
                 f"{r['rest_ms_p50']:.0f} ms median, {r['rest_ms_max']} ms max")
    line(all(r["rest_requests_max"] == 0 for r in results),
         f"API requests at rest: 0 per collector pass (streams only): at most "
         f"{each('rest_requests_max', '')}")
    line(all(r["health_p50_ms"] <= 5 for r in results),
         f"/healthz median ≤ 5 ms at every point: {each('health_p50_ms', ' ms', 1)}")
    line(all(r["health_p99_ms"] <= 100 for r in results),
         f"/healthz 99th percentile ≤ 100 ms at every point: {each('health_p99_ms', ' ms')}")
    lines.append("- measured: /healthz during the passes at rest, median / 99th percentile: " +
                 "; ".join(f"{r['point']}: {r['health_rest_p50_ms']:.1f} / "
                           f"{r['health_rest_p99_ms']:.0f} ms" for r in results))
    line(all(r["create_max_s"] <= 1 for r in results),
         f"a workload created is in the index within 1 s: at most {each('create_max_s', ' s', 2)}")
    line(all(r["latency_s"] <= 3 for r in results),
         f"a secret change reaches the rollout within one reloader period + 1 s (3 s): "
         f"{each('latency_s', ' s', 1)}")
    return lines


def distance_rows(r):
    """The lines of the table of a pass at a distance for one point."""
    return [f"| {r['point']} | {r['distinct']} | +{d['added_ms']} ms | {d['ms']} ms "
            f"| {d['requests']} | {d['ms'] / d['requests']:.1f} ms | {d['percent']}% "
            f"| {'once' if d['warned'] == 1 else d['warned'] or 'no'} |" for d in r["distance"]]


def row(r):
    """One line of the results table."""
    single = f"{r['single_ms']} ms ({r['single_requests']} req)" if "single_ms" in r else "-"
    return (
        f"| {r['point']} | {r['workloads']} | {r['distinct']} "
        f"| {r['list_ms']} ms ({r['list_requests']} req) "
        f"| {r['rest_ms_p50']:.0f} / {r['rest_ms_max']} ms ({r['rest_requests_max']} req, "
        f"{r['rest_events']} events) "
        f"| {r['watches']} | {r['cpu_ms_per_s']:.0f} ms/s "
        f"| {r['reloader_ms']:.0f} ms | {r['vault_per_pass']:.0f} "
        f"| {single} "
        f"| {r['api_per_quiet_pass']:.0f} "
        f"| {r['rss_steady_kib'] / 1024:.1f} MiB | {r['rss_peak_kib'] / 1024:.1f} MiB "
        f"| {r['health_p50_ms']:.1f} / {r['health_p99_ms']:.0f} / {r['health_max_ms']:.0f} ms"
        f" (at rest {r['health_rest_p50_ms']:.1f} / {r['health_rest_p99_ms']:.0f})"
        f"{f' ({n} refused)' if (n := r['health_errors']) else ''} "
        f"| {r['create_s']:.2f} / {r['create_max_s']:.2f} s "
        f"| {r['latency_s']:.1f} s | {r['batch_secrets']} → {r['batch_reloaded']}/{r['batch_expected']} "
        f"({r['batch_api']} req), {r.get('batch_straddled', 0)} twice, {r['wrong']} wrong |")


READING = "## What the numbers show"


def kept_reading(path):
    """The hand-written reading of the last run from the file being
    rewritten (from READING on), or a placeholder asking for one."""
    try:
        with open(path) as old:
            text = old.read()
    except OSError:
        text = ""
    at = text.find(READING)
    if at < 0:
        return f"{READING}\n\n(Not written yet for this run.)\n"
    return text[at:]


def vault_requests_text(listing):
    """How the Vault requests of a pass are counted, for the notes."""
    if not listing:
        return ("- Vault requests per reloader pass equal the distinct secrets in use (one "
                "metadata read each).")
    return f"""- The reloader runs with `--list-secret-metadata` (its OpenBao policy grants list on
  `secret/detailed-metadata/*`): each point's secrets share one directory, so a pass lists it
  in pages of {LIST_PAGE} keys up to the last key in use instead of reading each secret's
  metadata; "Vault req/pass" counts those pages. "One read per secret" is the same pass without
  the flag (as with HashiCorp Vault, or a policy without list): one `--once --dry-run` run after
  the daemon has stopped, one metadata read per secret."""


def write_markdown(args, results, took_s):
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    with open("/proc/meminfo") as f:
        memory = int(next(line.split()[1] for line in f if line.startswith("MemTotal"))) // 1024 ** 2
    kube = json.loads(command_line("kubectl", "version", "-o", "json") or "{}")
    server = kube.get("serverVersion", {}).get("gitVersion", "?")
    rows = [row(r) for r in results]
    distant = [line for r in results for line in distance_rows(r)]
    text = f"""# Benchmarks

Measured by `scripts/bench.sh` (rerun it to reproduce; it rewrites this file) against the local
control plane and OpenBao of `scripts/testenv.sh`, on {time.strftime('%Y-%m-%d')}; the points took
{took_s / 60:.0f} min in all (creating and deleting the workloads included).

Machine: {os.cpu_count()} cores ({cpu}), {memory} GiB memory. Kubernetes {server} (kube-apiserver,
etcd, kube-controller-manager, kube-scheduler and KWOK on the same machine; no workload here
tolerates the fake nodes' taint, so no pod runs), {' '.join(command_line('bao', 'version').split()[:2])},
{command_line('rustc', '-V')}; the reloader binary: {os.stat(args.bin).st_size / 1024 ** 2:.1f} MiB, static.

Each point W/S: W opted-in workloads (Deployments, DaemonSets, StatefulSets in turn, over 20
namespaces), each using 1-5 of S shared secrets, plus W workloads that do not opt in; the
reloader watches the whole cluster. A point nsN:W/S spreads the same over N namespaces and gives
the reloader `--namespaces` naming all N, so it holds one watch per kind and namespace; it runs
as a ServiceAccount with no cluster-wide binding, the manifests' ClusterRole bound by a
RoleBinding in each of the N namespaces, as a namespaced install would be. The reloader runs
with both periods at 2 s. Pass times and request counts come from its own log lines
(`collector pass: …`, `reloader pass: …`); memory from `/proc/PID/status` (VmRSS at rest, VmHWM
for the peak).

| W/S | workloads | secrets used | first collector pass (full list) | collector pass at rest: median / max (API req, events) | watches open | daemon CPU at rest | reloader pass | Vault req/pass | reloader pass, one read per secret | API req/quiet pass | RSS at rest | RSS peak | /healthz median / p99 / max (at rest: median / p99) | created → in index: median / max | change → new count | 10% of secrets changed → reloaded/expected |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

A pass at a distance (one read per secret, a round trip added before OpenBao):

| W/S | secrets used | added round trip | reloader pass, one read per secret | Vault requests | per request | of the {PERIOD_MS // 1000} s period | warned |
|---|---|---|---|---|---|---|---|
{chr(10).join(distant)}

{budgets(results)}

How to read it:
- The first collector pass lists every kind (per namespace for nsN) page by page and opens the
  watches. "At rest" starts after a later pass that saw no watch event (or after 10 s: the
  controllers may still be updating the new workloads' status, and with many watches the API
  server's bookmarks keep arriving), and covers {args.rest_passes} passes of each kind with no
  change made by the benchmark; "events" are the watch events applied in those passes. A
  collector pass at rest applies what the streams delivered since the loop last read them; its
  time is whole ms as logged ("0" is under 1 ms), its API requests are reconnects only. Between
  passes the loop reads the streams as their data arrives (it sleeps in poll(2) on them and on
  the health listener, waking at least every 50 ms); that time is not in a pass, so "daemon CPU
  at rest" gives all of it: the daemon's CPU time (user and system) per second over the same
  passes. The reloader pass and its requests are medians over the same window.
- "Watches open" is open/all from the last pass at rest (one per kind, or per kind and namespace).
{vault_requests_text(args.list_secret_metadata)} A quiet pass sends no API request. Changing 10% of the secrets gives one patch and one Event
  per reload. Each affected workload is reloaded once per reloader pass that first saw a secret
  of its changed: once, or twice when the batch's writes (one by one, taking longer than the
  gap between two passes) reached its secrets on both sides of a pass ("twice"); "wrong" counts
  workloads reloaded fewer times than once or more than once per changed secret they use.
- "/healthz" is how long the health endpoint took to answer a new connection, asked at random
  moments about every {HEALTH_EVERY * 1000:.0f} ms (not waiting for one answer before the next) by a
  process of its own, from the daemon's start to its stop: first list, first-sight baselines,
  changes and batch included; "at rest" counts the checks asked during the passes at rest. A
  check that arrives while the loop waits for a request (a patch, a list page) is answered after
  it.
- "A pass at a distance" is the pass of one read per secret (`--once --dry-run`, without
  `--list-secret-metadata`) on loopback, and again with OpenBao behind `scripts/faultproxy.py`
  in mode `slow`, which holds every request {ADDED_ROUND_TRIP_MS} ms before relaying it (not the
  answers): a Vault {ADDED_ROUND_TRIP_MS} ms of round trip away. The relay runs in Python on the
  same cores and adds a little of its own, so the budgets' "ms more per request" comes out
  somewhat above {ADDED_ROUND_TRIP_MS}. "Per request" is the pass's time over its Vault
  requests; the share of the period and the warning (once, when a pass outlasts its period) are
  the daemon's own log lines.
- "Created → in index" is from sending the create of an opted-in Deployment, at rest, to the
  daemon's /metrics (watched_workloads, kept current at every turn of the loop) counting it,
  asked every 10 ms; {args.probes} Deployments created one by one at random moments.
- "Change → new count" is from the write in OpenBao to the reload count being visible through
  the API, with a 2 s reloader period.

Before the streams (the run of 2026-11-29 at commit 4e291a7, same machine): a later collector
pass was one short watch per kind read for up to 0.8 s, about 780-810 ms at every size; /healthz
answered in 50.2 ms median at 100/100 (3.7 and 4.7 ms at the larger points, whose long passes
answer it between requests) and 303 ms at worst; with `--namespaces` naming 20 namespaces no
collector pass finished within 40 s (issue 11). That run asked /healthz about five times a second
right after its other checks, not at random moments.

{kept_reading(args.markdown)}"""
    with open(args.markdown, "w") as out:
        out.write(text)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", default="100/100,1000/1000,5000/2000,ns100:1000/1000",
                        help="W/S or nsN:W/S, separated by commas")
    parser.add_argument("--bin", required=True)
    parser.add_argument("--token", required=True, help="the reloader's ServiceAccount token file")
    parser.add_argument("--namespaced-token", help="token file of the ServiceAccount that nsN "
                        "points run as (bound by a RoleBinding in each of their namespaces)")
    parser.add_argument("--namespaced-account", default="bank-vaults-infra/bench-namespaced",
                        help="that ServiceAccount, NAMESPACE/NAME")
    parser.add_argument("--namespaced-role", default="bench-namespaced",
                        help="its OpenBao Kubernetes-auth role")
    parser.add_argument("--admin-token", required=True, help="a token allowed to create workloads")
    parser.add_argument("--work", required=True)
    parser.add_argument("--markdown", help="write the results table here (BENCHMARKS.md)")
    parser.add_argument("--rest-passes", type=int, default=10,
                        help="passes of each kind measured at rest, per point")
    parser.add_argument("--list-secret-metadata", action="store_true",
                        help="run the reloader with --list-secret-metadata (OpenBao; its policy "
                        "must grant list on secret/detailed-metadata/*), and time one pass "
                        "without it")
    parser.add_argument("--probes", type=int, default=5,
                        help="workloads created at rest to time their way into the index")
    args = parser.parse_args()
    with open(args.admin_token) as f:
        admin = f.read().strip()
    kube = Api(os.environ["KUBE_API_URL"], {"Authorization": f"Bearer {admin}",
                                            "Accept": "application/json"}, os.environ["KUBE_CA_FILE"])
    bao = Api(os.environ["VAULT_ADDR"], {"X-Vault-Token": os.environ["VAULT_TOKEN"]})
    points = parse_points(args.points)
    if any(p.namespaced for p in points) and not args.namespaced_token:
        sys.exit("bench: nsN points need --namespaced-token")
    results, started = [], time.monotonic()
    for point in points:
        cleanup(kube)
        point_started = time.monotonic()
        try:
            result = run_point(args, kube, bao, point)
        finally:
            cleanup(kube)
        result["took_s"] = time.monotonic() - point_started
        print("bench: " + json.dumps(result), flush=True)
        results.append(result)
    if args.markdown:
        write_markdown(args, results, time.monotonic() - started)
    failed = [r["point"] for r in results if r["wrong"] or r["vault_per_pass"] != r["vault_expected"]
              or r["batch_reloaded"] != r["batch_expected"] + r["batch_straddled"]
              or r["distance_wrong"]]
    if failed:
        sys.exit(f"bench: wrong reloads, request counts or warnings at {', '.join(failed)}")


if __name__ == "__main__":
    main()
