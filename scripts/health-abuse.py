#!/usr/bin/env python3
"""Abuse and probe the daemon's health listener, for the e2e.

  dribble HOST:PORT --seconds S   one connection sending a GET one byte every
                                  150 ms, reconnecting when the server closes it
  idle HOST:PORT --count N --seconds S
                                  N connections that send nothing, reopened
                                  when the server closes them
  stuck HOST:PORT --count N --seconds S
                                  N connections that each ask GET /metrics and
                                  never read the answer (a small receive
                                  window), all opened again every second
  probe HOST:PORT --seconds S --max-latency L
                                  a fresh GET /healthz every 200 ms; prints the
                                  count, median and max latency; exits 1 when an
                                  answer failed or took longer than L seconds

Only ever connects to the given address, which must be loopback (127.x,
::1 or localhost). Python 3 standard library only.
"""

import argparse
import ipaddress
import selectors
import socket
import statistics
import sys
import time

DRIBBLE_GAP = 0.150
PROBE_GAP = 0.200
PROBE_TIMEOUT = 5.0
CONNECT_TIMEOUT = 1.0


def loopback_target(text):
    """HOST:PORT -> (family, sockaddr), refusing anything not loopback."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r}")
    if host != "localhost":
        try:
            if not ipaddress.ip_address(host).is_loopback:
                raise ValueError
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"refusing {host!r}: only loopback (127.x, ::1, localhost)"
            ) from None
    infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    # localhost must resolve to loopback too; connect only to what was checked.
    for family, _, _, _, sockaddr in infos:
        if ipaddress.ip_address(sockaddr[0]).is_loopback:
            return family, sockaddr
    raise argparse.ArgumentTypeError(f"refusing {host!r}: it does not resolve to loopback")


def connect(target, timeout=CONNECT_TIMEOUT):
    family, sockaddr = target
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(sockaddr)
    except OSError:
        sock.close()
        raise
    return sock


def request(target):
    host = target[1][0]
    return f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


def closed_by_peer(sock):
    """Whether the server closed (or answered) a non-blocking socket."""
    try:
        sock.recv(4096)
        return True
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def dribble(args):
    """One byte every 150 ms; a new connection whenever the server closes one."""
    payload = request(args.target)
    end = time.monotonic() + args.seconds
    connections = sent = 0
    sock, at = None, 0
    while time.monotonic() < end:
        if sock is not None and (at == len(payload) or closed_by_peer(sock)):
            sock.close()
            sock = None
        if sock is None:
            try:
                sock, at = connect(args.target), 0
                sock.setblocking(False)
                connections += 1
            except OSError:
                time.sleep(DRIBBLE_GAP)
                continue
        try:
            sock.send(payload[at : at + 1])
            at, sent = at + 1, sent + 1
        except OSError:
            sock.close()
            sock = None
        time.sleep(DRIBBLE_GAP)
    if sock is not None:
        sock.close()
    print(f"dribble: {sent} bytes over {connections} connections")
    return 0


def idle(args):
    """Holds `count` silent connections open, reopening closed ones."""
    selector = selectors.DefaultSelector()
    end = time.monotonic() + args.seconds
    opened = 0
    while time.monotonic() < end:
        while len(selector.get_map()) < args.count and time.monotonic() < end:
            remaining = max(0.05, min(CONNECT_TIMEOUT, end - time.monotonic()))
            try:
                sock = connect(args.target, remaining)
            except OSError:
                break
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            opened += 1
        # Readable means the server closed it (or wrote, which it should not).
        for key, _ in selector.select(timeout=0.05):
            selector.unregister(key.fileobj)
            key.fileobj.close()
    for key in list(selector.get_map().values()):
        key.fileobj.close()
    selector.close()
    print(f"idle: held up to {args.count} connections, opened {opened} in all")
    return 0


def stuck(args):
    """Holds `count` connections that asked /metrics and read nothing,
    opening them all again every second (the daemon drops one it cannot
    finish within its deadline)."""
    end = time.monotonic() + args.seconds
    opened = 0
    payload = f"GET /metrics HTTP/1.1\r\nHost: {args.target[1][0]}\r\n\r\n".encode()
    while time.monotonic() < end:
        held = []
        for _ in range(args.count):
            try:
                sock = connect(args.target)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.sendall(payload)
            except OSError:
                continue
            held.append(sock)
            opened += 1
        time.sleep(max(0.0, min(1.0, end - time.monotonic())))
        for sock in held:
            sock.close()
    print(f"stuck: {opened} connections asked /metrics and read nothing")
    return 0


def fetch_once(target):
    """Seconds to a whole 200 answer to GET /healthz; raises on anything else."""
    started = time.monotonic()
    deadline = started + PROBE_TIMEOUT
    with connect(target, PROBE_TIMEOUT) as sock:
        sock.sendall(request(target))
        reply = b""
        while True:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, sep, body = reply.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    words = status.split(b" ")
    if not sep or len(words) < 2 or not words[0].startswith(b"HTTP/1.") or words[1] != b"200":
        raise RuntimeError(f"not a 200 answer: {status[:80]!r}")
    length = [
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")[1:]
        if line.lower().startswith(b"content-length:")
    ]
    if length != [str(len(body)).encode()]:
        raise RuntimeError(f"body of {len(body)} bytes, Content-Length {length!r}")
    return time.monotonic() - started


def probe(args):
    """A fresh GET every 200 ms; fails on any error or answer slower than L."""
    end = time.monotonic() + args.seconds
    latencies, failures = [], 0
    next_at = time.monotonic()
    while time.monotonic() < end:
        try:
            latency = fetch_once(args.target)
            latencies.append(latency)
            if latency > args.max_latency:
                print(f"probe: slow answer, {latency:.3f} s", file=sys.stderr)
        except (OSError, RuntimeError) as e:
            failures += 1
            print(f"probe: failed: {e}", file=sys.stderr)
        # Late after a slow answer: go on from now rather than burst.
        next_at = max(next_at + PROBE_GAP, time.monotonic())
        time.sleep(max(0.0, next_at - time.monotonic()))
    slow = sum(1 for latency in latencies if latency > args.max_latency)
    median = statistics.median(latencies) if latencies else float("nan")
    worst = max(latencies) if latencies else float("nan")
    print(
        f"probe: {len(latencies)} answered, {failures} failed, {slow} slower than "
        f"{args.max_latency} s; median {median * 1000:.1f} ms, max {worst * 1000:.1f} ms"
    )
    return 1 if failures or slow or not latencies else 0


def positive(text):
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    for name, run in (("dribble", dribble), ("idle", idle), ("stuck", stuck), ("probe", probe)):
        mode = modes.add_parser(name)
        mode.set_defaults(run=run)
        mode.add_argument("target", type=loopback_target, metavar="HOST:PORT")
        mode.add_argument("--seconds", type=positive, required=True)
        if name in ("idle", "stuck"):
            mode.add_argument("--count", type=int, required=True)
        if name == "probe":
            mode.add_argument("--max-latency", type=positive, required=True)
    return parser.parse_args(argv)


def main(argv):
    args = parse(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
