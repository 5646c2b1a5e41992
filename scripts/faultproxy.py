#!/usr/bin/env python3
"""A fault-injecting TCP relay between a client and a server on loopback.

Usage: faultproxy.py --listen 127.0.0.1:PORT --target 127.0.0.1:PORT
                     --control FILE [--max-seconds N]

It relays bytes both ways, in one mode at a time, read from FILE about every
100 ms (a missing or empty file means `pass`):

  pass     relay.
  hang     connections are accepted but nothing is relayed, on new or existing
           connections. When the hang ends, the connections it froze are
           reset: what was sent during it never arrives (a black hole, so a
           client's timed-out request is not delivered late).
  reset    existing connections are reset (RST: SO_LINGER 0, then close);
           new ones are reset at once.
  http500  each new connection gets `HTTP/1.1 500 Internal Server Error`
           with a small JSON body, then is closed; existing ones are closed.

Only loopback addresses are accepted. Once listening it prints its port on
stdout. It exits by itself after --max-seconds, and on SIGTERM or SIGINT.
Python standard library only.
"""

import argparse
import ipaddress
import os
import select
import signal
import socket
import struct
import sys
import threading
import time

MODES = ("pass", "hang", "reset", "http500")
POLL = 0.1  # how often the mode is read and relays look at it
BODY = b'{"errors":["injected fault"]}\n'
RESPONSE_500 = (
    b"HTTP/1.1 500 Internal Server Error\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
    b"Connection: close\r\n\r\n" + BODY
)


class State:
    """The mode all threads act on, and the stop flag."""

    def __init__(self):
        self.mode = "pass"
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


def answer_500(client):
    """Reads the request head (so closing does not turn into a reset of
    unread data), answers 500 and closes."""
    client.settimeout(2)
    try:
        seen = b""
        while b"\r\n\r\n" not in seen and len(seen) < 65536:
            chunk = client.recv(4096)
            if not chunk:
                break
            seen += chunk
        client.sendall(RESPONSE_500)
        client.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline and client.recv(4096):
            pass  # drain what the client still sends until it closes
    except OSError:
        pass
    finally:
        client.close()


def relay(state, client, target):
    """Relays between client and a new connection to target while the mode
    allows; acts on mode changes within POLL."""
    try:
        upstream = socket.create_connection(target, timeout=3)
    except OSError as e:
        log(f"cannot reach {target[0]}:{target[1]}: {e}; resetting the client")
        reset(client)
        return
    upstream.settimeout(None)
    peers = {client: upstream, upstream: client}
    withheld = False  # bytes arrived during a hang and were not relayed
    try:
        while not state.stop.is_set():
            mode = state.mode
            if mode == "hang":
                waiting, _, _ = select.select(list(peers), [], [], 0)
                withheld = withheld or bool(waiting)
                time.sleep(POLL)
                continue
            if withheld or mode == "reset":
                reset(client)
                reset(upstream)
                return
            if mode == "http500":
                break
            readable, _, _ = select.select(list(peers), [], [], POLL)
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    return
                peers[sock].sendall(data)
    except OSError:
        pass
    finally:
        client.close()
        upstream.close()


def serve(state, listener, target):
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
        mode = state.mode
        if mode == "reset":
            reset(client)
            continue
        work = answer_500 if mode == "http500" else None
        args = (client,) if work else (state, client, target)
        threading.Thread(target=work or relay, args=args, daemon=True).start()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True, type=loopback_address)
    parser.add_argument("--target", required=True, type=loopback_address)
    parser.add_argument("--control", required=True)
    parser.add_argument("--max-seconds", type=float, default=1800)
    args = parser.parse_args()

    state = State()
    family = socket.AF_INET6 if ":" in args.listen[0] else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(args.listen)
    listener.listen(128)
    print(listener.getsockname()[1], flush=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: state.stop.set())
    threading.Thread(target=serve, args=(state, listener, args.target), daemon=True).start()
    log(f"relaying {args.listen[0]}:{listener.getsockname()[1]} -> {args.target[0]}:{args.target[1]}")

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
