#!/usr/bin/env python3
"""Scale benchmark driver for scripts/bench-scale.sh (standard library only).

One node with SCALE_NAMES names and three nodes (R = 2) with SCALE_CLUSTER_NAMES, names shaped
like `dNNN/sNNN/fNNNNNNN`, bodies of 100 B to 4 KiB, one in ten taken from a small shared pool
(so some content deduplicates). Prints one line per figure and writes them to a CSV.
"""

import csv
import http.client
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

BIN = os.environ["SCALE_BIN"]
NAMES = int(os.environ.get("SCALE_NAMES", "1000000"))
CLUSTER_NAMES = int(os.environ.get("SCALE_CLUSTER_NAMES", "200000"))
CLIENTS = int(os.environ.get("SCALE_CLIENTS", "16"))
IDLE_SECS = float(os.environ.get("SCALE_IDLE_SECS", "60"))
REPS = int(os.environ.get("SCALE_REPS", "7"))
WORK = os.environ.get("SCALE_DIR", tempfile.gettempdir())
CSV_PATH = os.environ.get("SCALE_CSV", f"bench-scale-{time.strftime('%Y%m%d-%H%M%S')}.csv")
SECRET = "bench-scale-secret-0123456789abcdef0123456789"
TICK = os.sysconf("SC_CLK_TCK")

rows = []
started = []  # every node this run started, stopped at the end however it ends


def report(section, metric, value, unit, note=""):
    rows.append((section, metric, value, unit, note))
    shown = f"{value:,.3f}" if isinstance(value, float) else f"{value:,}"
    print(f"{section:<8} {metric:<44} {shown:>16} {unit:<10} {note}", flush=True)


class Node:
    def __init__(self, index, port, peers=(), extra=()):
        self.index, self.port, self.peers, self.extra = index, port, list(peers), list(extra)
        self.dir = tempfile.mkdtemp(prefix=f"scale-node{index}-", dir=WORK)
        self.proc = None
        started.append(self)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        args = [BIN, "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.dir, "--secret", SECRET,
                "--scrub-rate", "0", "--s3-listen", "off", *self.extra]
        for p in self.peers:
            args += ["--peer", p]
        self.log = open(os.path.join(self.dir, "node.log"), "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(f"node {self.index} to answer", 120, lambda: health(self.url))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=120)
        self.proc = None

    def wipe(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)

    def cpu_secs(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def rss_mib(self, key="VmRSS"):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def status(self):
        return json.loads(request(self.url, "GET", "/api/v1/status")[1])

    def metric(self, name):
        """Sum of a /metrics family's samples (counters end in _total)."""
        text = request(self.url, "GET", "/metrics")[1].decode()
        total, seen = 0.0, False
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
                seen = True
        return total if seen else None


def health(url):
    try:
        return request(url, "GET", "/health")[0] == 200
    except OSError:
        return False


def wait_for(what, limit, check, every=0.2):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every)
    sys.exit(f"bench-scale: gave up waiting for {what} after {limit} s")


def request(url, method, path, body=None, conn=None):
    own = conn is None
    if own:
        conn = http.client.HTTPConnection(urllib.parse.urlsplit(url).netloc, timeout=600)
    try:
        conn.request(method, path, body=body)
        res = conn.getresponse()
        return res.status, res.read()
    finally:
        if own:
            conn.close()


def name_of(i):
    return f"d{i % 100:03d}/s{(i // 100) % 100:03d}/f{i:07d}"


POOL = [random.Random(s).randbytes(random.Random(s).randint(100, 4096)) for s in range(100)]


def body_of(i):
    r = random.Random(i)
    if r.random() < 0.1:
        return POOL[r.randrange(len(POOL))]
    return r.randbytes(r.randint(100, 4096))


def ingest(node, start, end, marks=()):
    """PUTs names start..end over CLIENTS connections; returns {mark: rate over the last window}."""
    counter = [start]
    lock = threading.Lock()
    failures = []
    done_at = {}

    def worker():
        conn = http.client.HTTPConnection(f"127.0.0.1:{node.port}", timeout=600)
        while True:
            with lock:
                i = counter[0]
                if i >= end:
                    return
                counter[0] += 1
            path = "/api/v1/files/" + urllib.parse.quote(name_of(i))
            for attempt in range(3):
                try:
                    status, _ = request(node.url, "PUT", path, body_of(i), conn)
                    break
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection(f"127.0.0.1:{node.port}", timeout=600)
                    status = None
            if status != 201:
                failures.append((i, status))
            with lock:
                done = counter[0]
                for m in marks:
                    if done >= m and m not in done_at:
                        done_at[m] = time.monotonic()

    began = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        sys.exit(f"bench-scale: {len(failures)} PUTs failed, e.g. {failures[:3]}")
    took = time.monotonic() - began
    return (end - start) / took, done_at, began


def timed(url, path, reps=REPS):
    times = []
    for _ in range(reps):
        t = time.monotonic()
        status, body = request(url, "GET", path)
        times.append(time.monotonic() - t)
        if status != 200:
            sys.exit(f"bench-scale: GET {path} answered {status}: {body[:200]!r}")
    return statistics.median(times) * 1000, body


def idle_cpu(nodes, secs):
    before = [n.cpu_secs() for n in nodes]
    time.sleep(secs)  # the measurement window itself, not a wait for something to settle
    return [(n.cpu_secs() - b) / secs * 100 for n, b in zip(nodes, before)]


def quiet(node, limit=600):
    """Waits until the node's CPU use over 2 s falls below 2 % (start-up work done)."""
    def check():
        c = node.cpu_secs()
        time.sleep(2)
        return (node.cpu_secs() - c) / 2 < 0.02
    wait_for(f"node {node.index} to go quiet", limit, check, every=0)


def single():
    sec = "single"
    node = Node(1, 19400)
    node.start()
    mark = min(100_000, NAMES)
    rate, done_at, began = ingest(node, 0, NAMES, marks=(mark,))
    at_mark = mark / (done_at[mark] - began) if mark in done_at else rate
    report(sec, f"ingest rate, first {mark:,} names", at_mark, "names/s")
    report(sec, f"ingest rate, all {NAMES:,} names", rate, "names/s")
    tail = max(1, NAMES // 10)
    rate_tail, _, _ = ingest(node, NAMES, NAMES + tail)
    report(sec, f"ingest rate, {tail:,} more at {NAMES:,}", rate_tail, "names/s")
    total = NAMES + tail
    # Restart to the first GET that answers.
    node.stop()
    t = time.monotonic()
    node.start()
    wait_for("a GET after restart", 120, lambda: request(node.url, "GET", "/api/v1/files/" + name_of(1))[0] == 200,
             every=0.01)
    report(sec, "restart to first GET", (time.monotonic() - t) * 1000, "ms")
    quiet(node)
    report(sec, "RSS after start-up", node.rss_mib(), "MiB")
    deep = urllib.parse.quote(name_of(int(total * 0.9)))
    pages = [
        ("first page (limit 100, with total)", "/api/v1/files?limit=100"),
        ("first page of a folder, delimiter /", "/api/v1/files?prefix=d050/&delimiter=/&limit=100"),
        ("deep page by cursor", f"/api/v1/files?limit=100&after={deep}"),
        ("prefix page (d050/s050/)", "/api/v1/files?prefix=d050/s050/&limit=100"),
        ("sort=size desc, whole store", "/api/v1/files?limit=100&sort=size&order=desc"),
        ("sort=modified desc, whole store", "/api/v1/files?limit=100&sort=modified&order=desc"),
        ("sort=size asc, a folder", "/api/v1/files?prefix=d050/s050/&delimiter=/&limit=100&sort=size"),
        ("sort=modified desc, a folder",
         "/api/v1/files?prefix=d050/s050/&delimiter=/&limit=100&sort=modified&order=desc"),
    ]
    for what, path in pages:
        ms, _ = timed(node.url, path)
        report(sec, what, ms, "ms", "median")
    # The legacy whole-array list, and memory under four concurrent sorted pages.
    ms, body = timed(node.url, "/api/list", reps=1)
    report(sec, "/api/list (every name)", ms, "ms", f"{len(body):,} bytes")
    peak = [node.rss_mib()]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], node.rss_mib())
            time.sleep(0.02)
    sampler = threading.Thread(target=sample)
    sampler.start()
    lists = [threading.Thread(target=timed, args=(node.url, "/api/v1/files?limit=100&sort=size&order=desc", 3))
             for _ in range(4)]
    for t in lists:
        t.start()
    for t in lists:
        t.join()
    stop.set()
    sampler.join()
    report(sec, "peak RSS, four concurrent sort=size pages", peak[0], "MiB")
    # A delete, then a put right after it.
    times = []
    for i in range(REPS):
        t = time.monotonic()
        request(node.url, "DELETE", "/api/v1/files/" + urllib.parse.quote(name_of(i)))
        request(node.url, "PUT", "/api/v1/files/" + urllib.parse.quote(f"after-delete/{i}"), body_of(total + i))
        times.append(time.monotonic() - t)
    report(sec, "a delete then a put", statistics.median(times) * 1000, "ms", "median")
    quiet(node)
    report(sec, f"idle CPU over {IDLE_SECS:.0f} s", idle_cpu([node], IDLE_SECS)[0], "% core")
    st = node.status()
    report(sec, "database file per name", st["db_file_bytes"] / max(1, st["files"]), "bytes")
    node.stop()
    shutil.rmtree(node.dir, ignore_errors=True)


def cluster():
    sec = "cluster"
    n1 = Node(1, 19410)
    n1.start()
    n2 = Node(2, 19411, peers=[n1.url])
    n2.start()
    n3 = Node(3, 19412, peers=[n1.url])
    n3.start()
    nodes = [n1, n2, n3]
    wait_for("three members up", 60, lambda: all(
        sum(p["state"] == "up" for p in n.status()["peers"]) == 2 for n in nodes))
    rate, _, _ = ingest(n1, 0, CLUSTER_NAMES)
    report(sec, f"ingest through one node, {CLUSTER_NAMES:,} names", rate, "names/s")
    for n in nodes:
        quiet(n)
    for n, cpu in zip(nodes, idle_cpu(nodes, IDLE_SECS)):
        report(sec, f"idle CPU node {n.index} over {IDLE_SECS:.0f} s", cpu, "% core")
    chunks = sum(n.status()["chunks"] for n in nodes)

    def fetched():
        return sum(n.metric("diststore_repair_fetched_chunks_total") or 0 for n in nodes if n.proc)

    # A node down for 60 s (inside --down-out-after) and back: nothing should be copied.
    before = fetched()
    n3.stop()
    time.sleep(IDLE_SECS)  # the outage itself (inside the grace)
    n3.start()
    wait_for("node 3 back in", 120, lambda: sum(p["state"] == "up" for p in n3.status()["peers"]) == 2)
    for n in nodes:
        quiet(n)
    report(sec, f"chunks copied, a node down {IDLE_SECS:.0f} s and back", int(fetched() - before), "chunks",
           f"of {chunks:,} copies")
    # A node wiped and restarted: time to list every name, and to hold its share again.
    n3.wipe()
    t = time.monotonic()
    n3.start()
    wait_for("the wiped node to list every name", 3600, lambda: n3.status()["files"] >= CLUSTER_NAMES, every=1)
    took = time.monotonic() - t
    report(sec, "wiped node: time to list every name", took, "s", f"{CLUSTER_NAMES / took:,.0f} names/s")
    hold_share(n3, CLUSTER_NAMES)
    report(sec, "wiped node: time to hold its share", time.monotonic() - t, "s",
           f"{n3.status()['chunks']:,} chunks")
    # A fourth node: the share of chunks that move.
    before = fetched()
    n4 = Node(4, 19413, peers=[n1.url])
    n4.start()
    nodes.append(n4)
    hold_share(n4, CLUSTER_NAMES)
    wait_for("the others to drop what moved", 3600, lambda: all(quiet_now(n) for n in nodes), every=1)
    distinct = max(n.status()["chunks"] for n in nodes)  # a lower bound of distinct chunks
    moved = fetched() - before
    total_distinct = chunks / 2
    report(sec, "fourth node: chunks moved / distinct chunks", moved / total_distinct, "ratio",
           f"ideal R/N = {2 / 4:.2f}, target ≤ {1.2 * 2 / 4:.2f}; max node holds {distinct:,}")
    for n in nodes:
        n.stop()
        shutil.rmtree(n.dir, ignore_errors=True)


def hold_share(node, names):
    """Waits for the node to know every name, then for repair to have nothing left: no pass
    under way, an empty queue, and the same chunk count a second apart."""
    wait_for(f"node {node.index} to list every name", 3600, lambda: node.status()["files"] >= names, every=1)

    def settled():
        a = node.status()
        time.sleep(1)
        b = node.status()
        r = b["repair"]
        return not r["pass_running"] and r["queued"] == 0 and a["chunks"] == b["chunks"]
    wait_for(f"node {node.index} to hold its share", 3600, settled, every=0)


def quiet_now(node):
    c = node.cpu_secs()
    time.sleep(1)
    return node.cpu_secs() - c < 0.02


def main():
    print(f"bench-scale: {NAMES:,} names on one node, {CLUSTER_NAMES:,} on three; binary {BIN}")
    print(f"{'section':<8} {'metric':<44} {'value':>16} {'unit':<10} note")
    try:
        if NAMES > 0:
            single()
        if CLUSTER_NAMES > 0:
            cluster()
    finally:
        for n in started:
            try:
                n.stop()
            except Exception as e:  # a stuck node must not hide the figures so far
                print(f"bench-scale: stopping node {n.index}: {e}", file=sys.stderr)
        with open(CSV_PATH, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["section", "metric", "value", "unit", "note"])
            w.writerows(rows)
        print(f"raw figures: {CSV_PATH}")


if __name__ == "__main__":
    main()
