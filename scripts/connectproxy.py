#!/usr/bin/env python3
"""A CONNECT proxy on loopback that knows a few names, for the proxy tests.

Usage: connectproxy.py --listen 127.0.0.1:PORT --map NAME=127.0.0.1:PORT ...
                       [--log FILE] [--max-seconds N]

Each connection must start with `CONNECT host:port HTTP/1.1`. A host named
by a --map (any port) is relayed to its loopback address, as a proxy that
resolves names the client cannot; anything else, and any other method, is
answered 403 and closed. Each request line is appended to --log (one line
each, with `-> relayed` or `-> refused`). Only loopback addresses are
listened on or connected to. It exits by itself after --max-seconds, and
on SIGTERM or SIGINT. Python standard library only.
"""

import argparse
import ipaddress
import signal
import socket
import sys
import threading
import time

HEAD_LIMIT = 16384


def loopback(text):
    host, _, port = text.rpartition(":")
    if not ipaddress.ip_address(host.strip("[]")).is_loopback:
        raise argparse.ArgumentTypeError(f"{text} is not a loopback address")
    return host.strip("[]"), int(port)


def mapping(text):
    name, _, address = text.partition("=")
    return name.lower(), loopback(address)


def relay(source, sink):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def handle(client, names, log, lock):
    client.settimeout(10)
    head = b""
    try:
        while b"\r\n\r\n" not in head and len(head) < HEAD_LIMIT:
            data = client.recv(4096)
            if not data:
                client.close()
                return
            head += data
    except OSError:
        client.close()
        return
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    words = line.split(" ")
    target = None
    if len(words) == 3 and words[0] == "CONNECT":
        host = words[1].rpartition(":")[0].strip("[]").lower()
        target = names.get(host)
    with lock, open(log, "a") as f:
        f.write(f"{line} -> {'relayed' if target else 'refused'}\n")
    if target is None:
        client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        client.close()
        return
    try:
        upstream = socket.create_connection(target, timeout=10)
    except OSError:
        client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
        client.close()
        return
    client.settimeout(None)
    upstream.settimeout(None)
    client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
    rest = head.split(b"\r\n\r\n", 1)[1]
    if rest:
        upstream.sendall(rest)
    threading.Thread(target=relay, args=(upstream, client), daemon=True).start()
    relay(client, upstream)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", type=loopback, required=True)
    parser.add_argument("--map", type=mapping, action="append", default=[])
    parser.add_argument("--log", default="/dev/null")
    parser.add_argument("--max-seconds", type=float, default=900)
    args = parser.parse_args()
    names = dict(args.map)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    family = socket.AF_INET6 if ":" in args.listen[0] else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(args.listen)
    listener.listen(128)
    listener.settimeout(0.2)
    print(listener.getsockname()[1], flush=True)
    lock = threading.Lock()
    end = time.monotonic() + args.max_seconds
    while not stop.is_set() and time.monotonic() < end:
        try:
            client, _ = listener.accept()
        except socket.timeout:
            continue
        threading.Thread(target=handle, args=(client, names, args.log, lock), daemon=True).start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
