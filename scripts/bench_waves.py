"""The Python half of scripts/bench-waves.sh: the fake nodes and Deployments,
the sampler of rollouts in progress, and the BENCHMARKS.md section. The
Deployment and the judgement of one in progress are also scripts/e2e-waves.sh's."""
import json, os, subprocess, sys, time

HEADING = "## Rolling out a shared secret in waves"
PODS_PER_NODE = 110  # the allocatable pods of tests/kwok/stages.yaml


def kubectl(*args, stdin=None):
    return subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True,
                          check=True).stdout


def nodes(count, limit):
    """Enough fake nodes for every pod and each rollout's surge pod."""
    wanted = -(-(count + limit) // PODS_PER_NODE)
    return {"apiVersion": "v1", "kind": "List", "items": [{
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": f"bench-waves-node-{i}", "annotations": {"kwok.x-k8s.io/node": "fake"},
                     "labels": {"bench-waves": "true", "kubernetes.io/os": "linux"}},
        "spec": {"taints": [{"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}]},
    } for i in range(wanted)]}


def deployment(namespace, name, prefix, secret, min_ready=0):
    """A Deployment of one replica whose pod runs on the fake nodes, using
    secret/data/SECRET."""
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": 1, "minReadySeconds": min_ready,
                     "selector": {"matchLabels": {"app": name}},
                     "template": {
                         "metadata": {"labels": {"app": name},
                                      "annotations": {prefix + "/reload-on-secret-change": "true"}},
                         "spec": {"tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists",
                                                   "effect": "NoSchedule"}],
                                  "containers": [{"name": "app", "image": "registry.invalid/pause:3",
                                                  "env": [{"name": "K",
                                                           "value": f"vault:secret/data/{secret}#K"}]}]}}}}


def deployments(namespace):
    return json.loads(kubectl("-n", namespace, "get", "deploy", "-o", "json"))["items"]


def rolling(d):
    """kubectl rollout status's judgement of a Deployment."""
    spec, status = d["spec"], d.get("status", {})
    if status.get("observedGeneration", 0) < d["metadata"].get("generation", 0):
        return True
    updated = status.get("updatedReplicas", 0)
    return (updated < spec.get("replicas", 1) or status.get("replicas", 0) > updated
            or status.get("availableReplicas", 0) < updated)


def wait_for(what, predicate, timeout):
    started = time.time()
    while not predicate():
        if time.time() - started > timeout:
            sys.exit(f"bench-waves: {what}: not within {timeout} s")
        time.sleep(2)
    print(f"bench-waves: {what} in {time.time() - started:.0f} s", flush=True)


def setup(namespace, count, prefix):
    ready = lambda: all(c["status"] == "True" for n in json.loads(kubectl(
        "get", "nodes", "-l", "bench-waves=true", "-o", "json"))["items"]
        for c in n.get("status", {}).get("conditions", []) if c["type"] == "Ready")
    wait_for("the fake nodes Ready", ready, 60)
    subprocess.run(["kubectl", "taint", "nodes", "-l", "bench-waves=true",
                    "node.kubernetes.io/not-ready:NoSchedule-"], capture_output=True)
    for start in range(0, count, 100):
        items = [deployment(namespace, f"w-{i:04d}", prefix, "bench-waves/shared")
                 for i in range(start, min(count, start + 100))]
        kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    available = lambda: sum(d.get("status", {}).get("availableReplicas", 0) == 1
                            for d in deployments(namespace)) == count
    wait_for(f"{count} Deployments Available", available, 1800)


def memory(pid):
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def run(namespace, count, prefix, limit, pid, markdown, binary):
    state = prefix + "/observed-versions"
    baselined = lambda: sum(state in (d["metadata"].get("annotations") or {})
                            for d in deployments(namespace)) == count
    wait_for("every baseline written", baselined, 300)
    time.sleep(5)
    rest = memory(pid)[0]
    env = dict(os.environ, BAO_ADDR=os.environ["VAULT_ADDR"], BAO_TOKEN=os.environ["VAULT_TOKEN"])
    subprocess.run(["bao", "kv", "put", "secret/bench-waves/shared", f"K=v-{time.time()}"],
                   env=env, check=True, capture_output=True)
    written = time.time()
    most, samples, peak = 0, 0, 0.0
    key = prefix + "/secret-reload-count"
    while True:
        items = deployments(namespace)
        counts = [int(d["spec"]["template"]["metadata"].get("annotations", {}).get(key, "0"))
                  for d in items]
        busy = sum(rolling(d) for d, c in zip(items, counts) if c > 0)
        most, samples = max(most, busy), samples + 1
        peak = max(peak, memory(pid)[1])
        if max(counts) > 1:
            sys.exit("bench-waves: a Deployment was rolled out twice")
        if busy == 0 and min(counts) == 1:
            break
        if time.time() - written > 1800:
            sys.exit("bench-waves: not all rolled out within 30 minutes")
        time.sleep(1)
    took = time.time() - written
    rss = memory(pid)[0]
    print(f"bench-waves: {count} rolled out once each in {took:.0f} s, at most {most} in progress "
          f"({samples} samples), RSS {rest:.1f} MiB before, {rss:.1f} after, peak {peak:.1f}")
    write(markdown, (count, limit, took, most, samples, rest, rss, peak, binary))


def write(markdown, result):
    count, limit, took, most, samples, rest, rss, peak, binary = result
    with open("/proc/cpuinfo") as f:
        cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    section = f"""{HEADING}

Measured by `scripts/bench-waves.sh` (rerun it to reproduce; it rewrites this section only) on
{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores ({cpu}), against
the local control plane with kube-scheduler and KWOK (fake nodes of 110 pods each; every pod is
scheduled, becomes Running and Ready through KWOK's stages): {count} Deployments of one replica
whose pods run share one secret; it changes, and the reloader (`--reloader-run-period 2s`) rolls
them out with `--max-concurrent-rollouts {limit}`. "In progress" is sampled from the API server
as fast as listing the {count} Deployments allows (a sample every {took / samples:.1f} s here) and
judged as `kubectl rollout status` judges it, counting only those the reloader rolled out; a
sample may miss a moment, so the most seen is at most the most there were; the reloader binary is
{os.stat(binary).st_size / 1024 ** 2:.1f} MiB.

| Deployments | --max-concurrent-rollouts | write → all rolled out and done | most in progress at once | rolled out | daemon RSS before / after / peak |
|---|---|---|---|---|---|
| {count} | {limit} | {took:.0f} s | {most} ({samples} samples) | each exactly once | {rest:.1f} / {rss:.1f} / {peak:.1f} MiB |

The time is mostly the control plane's: each rollout is a new ReplicaSet, a pod scheduled and
made Ready, the old one scaled down and deleted, by kube-controller-manager and kube-scheduler on
the same two cores; the reloader waits in `poll(2)` meanwhile and starts the next wave at the
pass after slots free up.
"""
    try:
        text = open(markdown).read()
    except OSError:
        text = ""
    at = text.find(HEADING)
    if at < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", at + len(HEADING))
        text = text[:at] + section + (text[end + 1:] if end >= 0 else "")
    with open(markdown, "w") as out:
        out.write(text)


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "nodes":
        print(json.dumps(nodes(int(args[0]), int(args[1]))))
    elif command == "setup":
        setup(args[0], int(args[1]), args[2])
    elif command == "run":
        run(args[0], int(args[1]), args[2], int(args[3]), int(args[4]), args[5], args[6])
