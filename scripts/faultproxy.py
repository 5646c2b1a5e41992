#!/usr/bin/env python3
"""A fault-injecting TCP relay between a client and a server on loopback.

Usage: faultproxy.py --listen 127.0.0.1:PORT --target 127.0.0.1:PORT
                     --control FILE [--max-seconds N] [--slow-ms N]
                     [--tls-cert FILE --tls-key FILE --target-ca FILE]

It relays bytes both ways, in one mode at a time, read from FILE at start
and about every 100 ms (a missing or empty file means `pass`):

  pass     relay.
  hang     connections are accepted but nothing is relayed, on new or existing
           connections. When the hang ends, the connections it froze are
           reset: what was sent during it never arrives (a black hole, so a
           client's timed-out request is not delivered late).
  reset    existing connections are reset (RST: SO_LINGER 0, then close);
           new ones are reset at once.
  http500  each new connection gets `HTTP/1.1 500 Internal Server Error`
           with a small JSON body, then is closed; existing ones are closed.
  html200  likewise, but `HTTP/1.1 200 OK` with an HTML page, as a captive
           portal or a misrouted load balancer answers.
  gone     a Kubernetes watch (a request whose first line has `watch=1`)
           gets `200 OK` with one chunked line, an ERROR event whose Status
           has code 410 ("too old resource version"), then the final chunk,
           and is closed; existing watches are closed. Other requests are
           relayed as in `pass`.
  slow     relay, but hold each piece of what a client sends for --slow-ms
           (default 200) from its arrival, in order: every request, on a new
           or a kept-alive connection, reaches the server that much later,
           as over a link with that round trip (all of it added on the way
           in; answers are relayed as they come, also while later requests
           are held). Connections are held apart, none waits for another;
           connecting itself is not delayed.

The first request line of each connection is read before relaying (the
relay then sends it first), so clients must speak first, as HTTP clients
do. With --tls-cert and --tls-key (PEM) the proxy terminates TLS on its
listening side, and then connects to the target with TLS too, verifying it
against --target-ca (PEM) and the target's IP: an HTTPS server such as the
API server can be relayed, and watches recognised, in the middle.

Only loopback addresses are accepted. Once listening it prints its port on
stdout. It exits by itself after --max-seconds, and on SIGTERM or SIGINT.
Python standard library only.
"""

import argparse
import collections
import ipaddress
import os
import select
import signal
import socket
import ssl
import struct
import sys
import threading
import time

MODES = ("pass", "hang", "reset", "http500", "html200", "gone", "slow")
POLL = 0.1  # how often the mode is read and relays look at it


def closing_answer(status, content_type, body):
    """A whole HTTP/1.1 answer that closes the connection."""
    return (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


RESPONSE_500 = closing_answer("500 Internal Server Error", "application/json",
                              b'{"errors":["injected fault"]}\n')
RESPONSE_HTML = closing_answer("200 OK", "text/html",
                               b"<html><body><h1>Welcome</h1></body></html>\n")

GONE_EVENT = (
    b'{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},'
    b'"status":"Failure","message":"too old resource version","reason":"Expired","code":410}}\n'
)
RESPONSE_GONE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"Connection: close\r\n\r\n"
    + f"{len(GONE_EVENT):x}\r\n".encode()
    + GONE_EVENT
    + b"\r\n0\r\n\r\n"
)
HEAD_LIMIT = 65536
SEND_TIMEOUT = 5  # seconds a relayed write may wait for its reader


class State:
    """The mode all threads act on, how long `slow` holds (seconds), and
    the stop flag."""

    def __init__(self, slow):
        self.mode = "pass"
        self.slow = slow
        self.stop = threading.Event()


def log(msg):
    print(f"faultproxy: {msg}", file=sys.stderr, flush=True)


def loopback_address(text):
    """HOST:PORT with HOST a loopback IP literal; else argparse refuses it."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        if not sep or not ipaddress.ip_address(host).is_loopback:
            raise ValueError
        port = int(port)
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a loopback IP:PORT") from None
    return host, port


def read_mode(path, current):
    """The mode FILE asks for: `pass` when missing or empty; unknown words
    keep the current mode (and are reported)."""
    try:
        with open(path, encoding="utf-8") as f:
            word = f.read().strip()
    except FileNotFoundError:
        return "pass"
    except OSError as e:
        log(f"cannot read {path}: {e}; keeping {current}")
        return current
    if not word:
        return "pass"
    if word not in MODES:
        log(f"unknown mode {word!r} in {path}; keeping {current}")
        return current
    return word


def reset(sock):
    """Closes with RST rather than FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def answer(client, response, seen=b""):
    """Reads the rest of the request head (so closing does not turn into a
    reset of unread data), sends response and closes."""
    client.settimeout(2)
    try:
        while b"\r\n\r\n" not in seen and len(seen) < HEAD_LIMIT:
            chunk = client.recv(4096)
            if not chunk:
                break
            seen += chunk
        client.sendall(response)
        if not isinstance(client, ssl.SSLSocket):
            client.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline and client.recv(4096):
            pass  # drain what the client still sends until it closes
    except OSError:
        pass
    finally:
        client.close()


def first_line(client):
    """What the client sent up to the end of its request's first line (or
    HEAD_LIMIT bytes, its end of input, or 3 s of silence)."""
    client.settimeout(3)
    seen = b""
    try:
        while b"\r\n" not in seen and len(seen) < HEAD_LIMIT:
            chunk = client.recv(4096)
            if not chunk:
                break
            seen += chunk
    except OSError:
        pass
    return seen


def is_watch(seen):
    """Whether the request line in seen asks for a Kubernetes watch."""
    parts = seen.split(b"\r\n", 1)[0].split(b" ")
    return len(parts) >= 2 and b"watch=1" in parts[1]


class Tls:
    """Both TLS ends: a server context towards clients, a client context
    (verifying the target) towards the target."""

    def __init__(self, cert, key, target_ca):
        self.server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server.load_cert_chain(cert, key)
        self.client = ssl.create_default_context(cafile=target_ca)


def ready(peers, timeout):
    """The sockets with data to read: TLS ones with decrypted bytes waiting
    (select cannot see those), else what select finds within timeout."""
    buffered = [s for s in peers if isinstance(s, ssl.SSLSocket) and s.pending()]
    if buffered:
        return buffered
    readable, _, _ = select.select(list(peers), [], [], timeout)
    return readable


def receive(sock):
    """Bytes from a readable socket (b"" at its end), or None when what
    arrived was no application data (a TLS record such as a session
    ticket): waiting for more would block the other direction."""
    sock.settimeout(POLL)
    try:
        return sock.recv(65536)
    except socket.timeout:
        return None
    finally:
        sock.settimeout(SEND_TIMEOUT)


def no_delay(sock):
    """Sends each relayed piece at once: Nagle's wait for the peer's ACK of
    the last piece would add tens of ms to an answer relayed in two."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connect(target, tls):
    """A connection to target, inside TLS when the proxy speaks TLS."""
    upstream = socket.create_connection(target, timeout=3)
    no_delay(upstream)
    if tls:
        try:
            upstream = tls.client.wrap_socket(upstream, server_hostname=target[0])
        except OSError:
            upstream.close()
            raise
    upstream.settimeout(SEND_TIMEOUT)
    return upstream


def relay(state, client, target, tls, head):
    """Relays between client and a new connection to target (head, what
    the client already sent, first) while the mode allows; acts on mode
    changes within POLL. What the client sends is queued with the time it
    is due upstream (later by state.slow in `slow`), so holding it never
    holds the answers coming back, nor the order of what follows."""
    try:
        upstream = connect(target, tls)
    except OSError as e:
        log(f"cannot reach {target[0]}:{target[1]}: {e}; resetting the client")
        reset(client)
        return
    client.settimeout(SEND_TIMEOUT)
    reading = [client, upstream]
    watch = is_watch(head)
    withheld = False  # bytes arrived during a hang and were not relayed
    held = collections.deque()  # (due, bytes) from the client, oldest first
    try:
        hold(held, head, state.slow if state.mode == "slow" else 0)
        while not state.stop.is_set():
            mode = state.mode
            if mode == "hang":
                withheld = withheld or bool(held) or bool(ready(reading, 0))
                time.sleep(POLL)
                continue
            if withheld or mode == "reset":
                reset(client)
                reset(upstream)
                return
            if mode in ("http500", "html200") or (mode == "gone" and watch):
                break
            now = time.monotonic()
            while held and held[0][0] <= now:
                upstream.sendall(held.popleft()[1])
            if client not in reading and not held:
                return  # the client has ended and all it sent was delivered
            for sock in ready(reading, min(POLL, held[0][0] - now) if held else POLL):
                data = receive(sock)
                if data is None:
                    continue
                if sock is upstream:
                    if data == b"":
                        return
                    client.sendall(data)
                elif data == b"":
                    reading.remove(client)  # deliver what is held, then close
                else:
                    hold(held, data, state.slow if mode == "slow" else 0)
    except OSError:
        pass
    finally:
        client.close()
        upstream.close()


def hold(held, data, delay):
    """Queues data from the client, due `delay` seconds from now."""
    if data:
        held.append((time.monotonic() + delay, data))


def handle(state, client, target, tls):
    """One accepted connection: TLS first when the proxy speaks it, then
    the current mode's answer or a relay."""
    if tls:
        client.settimeout(3)
        try:
            client = tls.server.wrap_socket(client, server_side=True)
        except OSError as e:
            log(f"TLS handshake with a client failed: {e}")
            client.close()
            return
    if state.mode == "http500":
        answer(client, RESPONSE_500)
        return
    if state.mode == "html200":
        answer(client, RESPONSE_HTML)
        return
    head = first_line(client)
    if state.mode == "gone" and is_watch(head):
        answer(client, RESPONSE_GONE, head)
        return
    relay(state, client, target, tls, head)


def serve(state, listener, target, tls):
    """Accepts connections and hands each to a thread for the current mode."""
    listener.settimeout(POLL)
    while not state.stop.is_set():
        try:
            client, _ = listener.accept()
        except socket.timeout:
            continue
        except OSError as e:
            log(f"accept failed: {e}")
            time.sleep(POLL)
            continue
        if state.mode == "reset":
            reset(client)
            continue
        no_delay(client)
        threading.Thread(target=handle, args=(state, client, target, tls), daemon=True).start()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True, type=loopback_address)
    parser.add_argument("--target", required=True, type=loopback_address)
    parser.add_argument("--control", required=True)
    parser.add_argument("--max-seconds", type=float, default=1800)
    parser.add_argument("--slow-ms", type=float, default=200,
                        help="how long `slow` holds what a client sends (ms)")
    parser.add_argument("--tls-cert", help="PEM certificate the proxy serves (with --tls-key)")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument("--target-ca", help="PEM CA the target's certificate is verified with")
    args = parser.parse_args()
    tls_args = (args.tls_cert, args.tls_key, args.target_ca)
    if any(tls_args) and not all(tls_args):
        parser.error("--tls-cert, --tls-key and --target-ca go together")
    tls = Tls(*tls_args) if all(tls_args) else None
    if args.slow_ms < 0:
        parser.error("--slow-ms cannot be negative")

    state = State(args.slow_ms / 1000)
    # The file's mode from the first connection on, before the port is told.
    state.mode = read_mode(args.control, state.mode)
    family = socket.AF_INET6 if ":" in args.listen[0] else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(args.listen)
    listener.listen(128)
    print(listener.getsockname()[1], flush=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: state.stop.set())
    threading.Thread(target=serve, args=(state, listener, args.target, tls), daemon=True).start()
    over = " over TLS" if tls else ""
    log(f"relaying {args.listen[0]}:{listener.getsockname()[1]} -> {args.target[0]}:{args.target[1]}"
        f"{over}, mode {state.mode}")

    deadline = time.monotonic() + args.max_seconds
    while not state.stop.is_set():
        if time.monotonic() >= deadline:
            log(f"--max-seconds {args.max_seconds:g} reached; exiting")
            break
        mode = read_mode(args.control, state.mode)
        if mode != state.mode:
            log(f"mode {state.mode} -> {mode}")
            state.mode = mode
        state.stop.wait(POLL)
    state.stop.set()
    listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
