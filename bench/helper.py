#!/usr/bin/env python3
"""Helpers for bench/run.sh (standard library only).

  helper.py port                          a free loopback TCP port
  helper.py spawn PORT LOG CMD...         start CMD (stdout+stderr to LOG), poll 127.0.0.1:PORT
                                          every 0.5 ms until it accepts; print "PID MS" (spawn to
                                          listening). On failure the child is killed, exit 1.
  helper.py spawn-ready OPS_PORT LOG CMD...
                                          start CMD, poll http://127.0.0.1:OPS_PORT/readyz every
                                          2 ms until it answers 200; print "PID MS"
  helper.py reload PID LOG                send PID a SIGHUP, wait for the gateway's "configuration
                                          reloaded" line after the LOG's current end; print MS
  helper.py idle-conns PORT N HOLD_FILE   open N keep-alive connections, send one `GET /v2/` on
                                          each and read its answer, then hold them all open until
                                          HOLD_FILE exists; prints "open N" once they are up.
  helper.py idle-tls PORT N HOLD_FILE     the same over TLS (no certificate check): N handshakes,
                                          one `GET /v2/` each, held until HOLD_FILE exists
  helper.py connect-ms PORT N             N new TLS connections, one after the other, each a
                                          handshake and a `GET /v2/`: prints the median ms
  helper.py timed CMD...                  run CMD; print its standard output (one line), then
                                          its wall time and its CPU time (user + system), in ms
  helper.py table RESULTS                 the one table (markdown columns) from run.sh's results
"""
import os
import resource
import socket
import statistics
import subprocess
import sys
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    print(port)


def spawn(port, log, cmd):
    out = open(log, "ab")
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, close_fds=True)
    deadline = t0 + 30
    while True:
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", port))
            s.close()
            break
        except OSError:
            s.close()
        if child.poll() is not None:
            print(f"{cmd[0]} exited with {child.returncode} before listening on {port}", file=sys.stderr)
            sys.exit(1)
        if time.perf_counter() > deadline:
            child.kill()
            child.wait()
            print(f"{cmd[0]} did not listen on {port} within 30 s", file=sys.stderr)
            sys.exit(1)
        time.sleep(0.0005)
    ms = (time.perf_counter() - t0) * 1000
    print(child.pid, f"{ms:.1f}")
    sys.stdout.flush()
    os._exit(0)  # leave the child running; run.sh owns it by pid from here


def spawn_ready(port, log, cmd):
    import urllib.request
    out = open(log, "ab")
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, close_fds=True)
    deadline = t0 + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if child.poll() is not None:
            print(f"{cmd[0]} exited with {child.returncode} before /readyz answered 200", file=sys.stderr)
            sys.exit(1)
        if time.perf_counter() > deadline:
            child.kill()
            child.wait()
            print(f"{cmd[0]}: /readyz did not answer 200 within 60 s", file=sys.stderr)
            sys.exit(1)
        time.sleep(0.002)
    ms = (time.perf_counter() - t0) * 1000
    print(child.pid, f"{ms:.1f}")
    sys.stdout.flush()
    os._exit(0)


def reload(pid, log):
    import signal
    start = os.path.getsize(log)
    t0 = time.perf_counter()
    os.kill(pid, signal.SIGHUP)
    while time.perf_counter() < t0 + 60:
        with open(log, "rb") as f:
            f.seek(start)
            text = f.read()
        if b"configuration reloaded" in text:
            print(f"{(time.perf_counter() - t0) * 1000:.1f}")
            return
        if b"configuration reload failed" in text:
            sys.exit("the reload failed: " + text.decode(errors="replace")[-2000:])
        time.sleep(0.002)
    sys.exit("no reload line within 60 s")


def idle_conns(port, n, hold_file):
    conns = []
    request = f"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(request)
        conns.append(s)
    for s in conns:  # each answer is a short 401: its head and body arrive in one read
        if not s.recv(65536):
            print("a connection was closed by the server", file=sys.stderr)
            sys.exit(1)
    print("open", len(conns), flush=True)
    while not os.path.exists(hold_file):
        time.sleep(0.05)
    for s in conns:
        s.close()


def tls_context():
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def tls_get(ctx, port):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1")
    s.sendall(f"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    if not s.recv(65536):
        print("a TLS connection was closed by the server", file=sys.stderr)
        sys.exit(1)
    return s


def idle_tls(port, n, hold_file):
    ctx = tls_context()
    conns = [tls_get(ctx, port) for _ in range(n)]
    print("open", len(conns), flush=True)
    while not os.path.exists(hold_file):
        time.sleep(0.05)
    for s in conns:
        s.close()


def connect_ms(port, n):
    ctx = tls_context()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        tls_get(ctx, port).close()
        times.append((time.perf_counter() - t0) * 1000)
    print(f"{statistics.median(times):.2f}")


def timed(cmd):
    def cpu():  # of the children waited for, since this process began (even before an exec)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    c0, t0 = cpu(), time.perf_counter()
    out = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True).stdout
    wall, used = time.perf_counter() - t0, cpu() - c0
    print(out.strip(), f"{wall * 1000:.1f}", f"{used * 1000:.1f}")


TARGETS = ("direct", "gateway", "nginx", "haproxy")


def fmt(v, digits):
    return f"{v:,.{digits}f}"


def cell(values, digits, failures=None):
    if not values:
        return "n/a"
    vs = sorted(values)
    if len(vs) == 1:
        text = fmt(vs[0], digits)
    else:
        text = " / ".join(fmt(x, digits) for x in (vs[0], statistics.median(vs), vs[-1]))
    if failures is not None:
        text += f" (failed: {failures})"
    return text


def table(path):
    rows, labels, data, fails = [], {}, {}, {}
    for line in open(path):
        parts = line.rstrip("\n").split("\t")
        if parts[0] == "#row":  # #row KEY DIGITS SHOW_FAILURES LABEL
            key = parts[1]
            rows.append(key)
            labels[key] = (parts[4], int(parts[2]), parts[3] == "1")
            continue
        key, target, _run, value, failed = parts
        data.setdefault((key, target), []).append(float(value))
        fails[(key, target)] = fails.get((key, target), 0) + int(failed)

    def med(key, target):
        v = data.get((key, target))
        return statistics.median(v) if v else None

    def ratio(a, b):
        return f"{a / b:.2f}x" if a is not None and b else "n/a"

    def lower_is_better(label):  # rates end in "/s)"; times, CPU and memory are better lower
        return not label.endswith("/s)")

    def better_peer(key, label):
        peers = [v for v in (med(key, "nginx"), med(key, "haproxy")) if v is not None]
        if not peers:
            return None
        return min(peers) if lower_is_better(label) else max(peers)

    out = [["work", "direct", "gateway", "nginx", "haproxy", "gateway/direct", "gateway/nginx", "gateway/better peer"]]
    for key in rows:
        label, digits, show_failures = labels[key]
        cells = []
        for t in TARGETS:
            f = fails.get((key, t), 0)
            cells.append(cell(data.get((key, t), []), digits, f if (show_failures or f) and (key, t) in data else None))
        g = med(key, "gateway")
        out.append([label] + cells + [ratio(g, med(key, "direct")), ratio(g, med(key, "nginx")),
                                      ratio(g, better_peer(key, label))])
        # Added latency: per run, the target minus direct on the same run (runs interleave targets).
        if "lat" in key and (key, "direct") in data:
            d = data.get((key, "direct"), [])
            added = []
            for t in TARGETS:
                v = data.get((key, t), [])
                added.append(cell([a - b for a, b in zip(v, d)], 3) if t != "direct" and v and d else "n/a")
            out.append([f"{label.split(', ')[-1].split(' ')[0]} added over direct (ms)"] + added + ["", "", ""])
    widths = [max(len(r[i]) for r in out) for i in range(len(out[0]))]
    for i, r in enumerate(out):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    # Directory scale: each size against the smallest (the cost must not grow with the directory).
    sizes = sorted({int(k.rsplit("_", 1)[1]) for k in rows if k.startswith("dir_pat_")})
    for kind in ("pat", "deploy", "cpu"):
        base = med(f"dir_{kind}_{sizes[0]}", "gateway") if sizes else None
        if base and len(sizes) > 1:
            parts = [f"{n:,}: {ratio(med(f'dir_{kind}_{n}', 'gateway'), base)}" for n in sizes[1:]]
            what = {"pat": "PAT token rate", "deploy": "deploy-token token rate", "cpu": "/v2/ CPU per request"}[kind]
            print(f"\ndirectory scale, {what} against {sizes[0]:,} projects: " + ", ".join(parts))
    pat, pw = med("tok_es256", "gateway"), med("tok_bcrypt", "gateway")
    if pat and pw:
        print(f"\npassword login (bcrypt cost 10) / ES256 PAT token rate: {pw / pat:.2f}x")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "port":
        free_port()
    elif cmd == "spawn":
        spawn(int(args[0]), args[1], args[2:])
    elif cmd == "spawn-ready":
        spawn_ready(int(args[0]), args[1], args[2:])
    elif cmd == "reload":
        reload(int(args[0]), args[1])
    elif cmd == "idle-conns":
        idle_conns(int(args[0]), int(args[1]), args[2])
    elif cmd == "idle-tls":
        idle_tls(int(args[0]), int(args[1]), args[2])
    elif cmd == "connect-ms":
        connect_ms(int(args[0]), int(args[1]))
    elif cmd == "timed":
        timed(args)
    elif cmd == "table":
        table(args[0])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
