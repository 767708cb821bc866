#!/usr/bin/env python3
"""Test client for lb/l4's tests: talks to a VIP and reports what it saw as one JSON line.

The test starts it inside the cgroup (and network namespace) under test, so the kernel's
sock_addr programs see its sockets. Backends answer every new TCP connection and every UDP
datagram with their id (a line); TCP backends then echo.

  tcp VIP PORT N          N connections; counts of backend ids, peers not the VIP, errors
  udp VIP PORT N          one unconnected socket: N datagrams (ids and reply sources), and one
                          connected socket: its peer name and N replies
  udp-spread VIP PORT N   N sockets, one datagram each: counts of backend ids
  hold VIP PORT           one connection kept open; then commands on stdin, one per line:
                          "ping" (echo on the held connection), "tcp N" (N new connections),
                          "quit"
  loop VIP PORT           connections one after another until "stop" on stdin (at most 60 s
                          or 200000 connections); prints "ready" after the first
  multi PORT VIP...       one connection to each VIP: the backend id each reached
  connect VIP PORT        one connection attempt: its outcome (errno name or the id)
"""

import errno
import json
import select
import socket
import sys
import time

TIMEOUT = 5.0


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def read_line(sock):
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(256)
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


def one_tcp(vip, port):
    """(backend id, peer is the VIP) of one new connection."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    try:
        s.connect((vip, port))
        peer = s.getpeername()
        return read_line(s), peer == (vip, port)
    finally:
        s.close()


def tcp_counts(vip, port, n):
    ids, peer_bad, errors, last_error = {}, 0, 0, None
    for _ in range(n):
        try:
            backend, peer_ok = one_tcp(vip, port)
            ids[backend] = ids.get(backend, 0) + 1
            if not peer_ok:
                peer_bad += 1
        except OSError as e:
            errors += 1
            last_error = str(e)
    return {"ids": ids, "peer_bad": peer_bad, "errors": errors, "last_error": last_error}


def fmt(addr):
    return "%s:%d" % addr


def udp(vip, port, n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(TIMEOUT)
    ids, sources = [], []
    for i in range(n):
        s.sendto(b"x%d" % i, (vip, port))
        data, src = s.recvfrom(256)
        ids.append(data.decode().strip())
        sources.append(fmt(src))
    s.close()
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(TIMEOUT)
    c.connect((vip, port))
    peer = fmt(c.getpeername())
    connected_ids = []
    for i in range(n):
        c.send(b"y%d" % i)
        connected_ids.append(c.recv(256).decode().strip())
    c.close()
    return {
        "unconnected": {"ids": ids, "sources": sources},
        "connected": {"peer": peer, "ids": connected_ids},
    }


def udp_spread(vip, port, n):
    ids = {}
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(TIMEOUT)
        s.sendto(b"z%d" % i, (vip, port))
        data, _ = s.recvfrom(256)
        backend = data.decode().strip()
        ids[backend] = ids.get(backend, 0) + 1
        s.close()
    return {"ids": ids}


def hold(vip, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    s.connect((vip, port))
    out({"id": read_line(s), "peer": fmt(s.getpeername())})
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        if words[0] == "ping":
            s.sendall(b"ping\n")
            out({"echo": read_line(s), "peer": fmt(s.getpeername())})
        elif words[0] == "tcp":
            out(tcp_counts(vip, port, int(words[1])))
    s.close()


def loop(vip, port):
    ids, errors, last_error, count = {}, 0, None, 0
    deadline = time.monotonic() + 60
    while count < 200000 and time.monotonic() < deadline:
        try:
            backend, peer_ok = one_tcp(vip, port)
            ids[backend] = ids.get(backend, 0) + 1
            if not peer_ok:
                errors += 1
                last_error = "peer is not the VIP"
        except OSError as e:
            errors += 1
            last_error = str(e)
        count += 1
        if count == 1:
            out("ready")
        if select.select([sys.stdin], [], [], 0)[0]:
            line = sys.stdin.readline()
            if not line or line.strip() == "stop":
                break
    out({"ids": ids, "errors": errors, "last_error": last_error, "count": count})


def connect(vip, port):
    try:
        backend, _ = one_tcp(vip, port)
        return {"id": backend}
    except OSError as e:
        return {"error": errno.errorcode.get(e.errno, str(e))}


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "tcp":
        out(tcp_counts(args[0], int(args[1]), int(args[2])))
    elif cmd == "udp":
        out(udp(args[0], int(args[1]), int(args[2])))
    elif cmd == "udp-spread":
        out(udp_spread(args[0], int(args[1]), int(args[2])))
    elif cmd == "hold":
        hold(args[0], int(args[1]))
    elif cmd == "loop":
        loop(args[0], int(args[1]))
    elif cmd == "multi":
        port = int(args[0])
        out({vip: connect(vip, port) for vip in args[1:]})
    elif cmd == "connect":
        out(connect(args[0], int(args[1])))
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
