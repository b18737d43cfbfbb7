#!/usr/bin/env python3
"""Whole proposals against proposals as rows, on a local reed-solomon testnet.

Starts `lamina testnet` with N validators and the given dissemination, posts BLOBS blobs of
SIZE bytes (spread over the nodes), waits until every node committed the block that emptied
the blob pools, and prints one JSON line: the time taken, the bytes each node's peer-to-peer
sockets sent meanwhile (`bytes_sent` of `ss -ti`: TCP payload after noise and yamux), and
the CPU time all nodes used, and the proposal counters of `/metrics`. Linux only (`ss` from iproute2). See docs/benchmarks.md.

    cargo build --release -p lamina-node
    python3 scripts/dissemination_traffic.py --dissemination rows --validators 4 --blobs 12
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dissemination", choices=["whole", "rows"], required=True)
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument("--blobs", type=int, default=12)
    parser.add_argument("--size", type=int, default=1_000_000, help="bytes per blob")
    parser.add_argument("--base-port", type=int, default=27600)
    parser.add_argument("--lamina", default="target/release/lamina")
    args = parser.parse_args()
    n, base = args.validators, args.base_port
    workdir = tempfile.mkdtemp(prefix="lamina-dissemination-")
    testnet = f"{workdir}/testnet"
    subprocess.run(
        [args.lamina, "testnet", "init", "--validators", str(n), "--dir", testnet,
         "--base-port", str(base), "--data-availability", "reed-solomon",
         "--dissemination", args.dissemination],
        check=True, capture_output=True)
    with open(f"{workdir}/testnet.out", "w") as out:
        nodes = subprocess.Popen([args.lamina, "testnet", "--dir", testnet],
                                 stdout=out, stderr=subprocess.STDOUT)
    try:
        print(json.dumps(measure(args, n, base)))
    finally:
        nodes.send_signal(2)
        nodes.wait(timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)


def get(url):
    return json.load(urllib.request.urlopen(url, timeout=10))


def status(base, i):
    try:
        return get(f"http://127.0.0.1:{base + i}/v1/status")
    except OSError:
        return None


def wait(what, condition, timeout=300):
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def p2p_bytes_sent(base, n):
    """Bytes sent so far on each node's peer-to-peer connections, by process id."""
    lines = subprocess.run(["ss", "-tinpH"], capture_output=True, text=True).stdout.split("\n")
    sent = {}
    for line, info in zip(lines, lines[1:] + [""]):
        socket = re.search(r':(\d+)\s+\S+:(\d+)\s+users:\(\("lamina",pid=(\d+)', line)
        total = re.search(r"bytes_sent:(\d+)", info)
        if socket and total:
            ports = {int(socket.group(1)), int(socket.group(2))}
            if ports & set(range(base + 100, base + 100 + n)):
                pid = int(socket.group(3))
                sent[pid] = sent.get(pid, 0) + int(total.group(1))
    return sent


def cpu_seconds(pids):
    """CPU time (user and system) the processes `pids` have used so far."""
    ticks = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def metric(base, i, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{base + i}/metrics").read().decode()
    for line in text.split("\n"):
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    return 0


def measure(args, n, base):
    wait("every node at height 1",
         lambda: all((status(base, i) or {}).get("height", 0) >= 1 for i in range(n)), 60)
    first_height = max(status(base, i)["height"] for i in range(n))
    before = p2p_bytes_sent(base, n)
    cpu_before = cpu_seconds(before)
    start = time.time()
    data = bytes((i * 7) % 251 for i in range(args.size)).hex()
    for b in range(args.blobs):
        body = json.dumps({"namespace": (b"ms%06d" % b).hex(), "data": data}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{base + b % n}/v1/da/blobs", data=body,
            headers={"content-type": "application/json"})
        urllib.request.urlopen(request, timeout=30).read()
    wait("the blob pools to empty", lambda: all(
        status(base, i)["data_availability"]["pending_blobs"] == 0 for i in range(n)))
    tip = max(status(base, i)["height"] for i in range(n))
    wait("every node at the tip", lambda: all(status(base, i)["height"] >= tip for i in range(n)))
    seconds = time.time() - start
    after = p2p_bytes_sent(base, n)
    cpu = cpu_seconds(after) - cpu_before
    sent = [after[pid] - before.get(pid, 0) for pid in after]
    counters = ["proposal_whole_bytes_sent", "proposal_part_bytes_sent", "proposals_rebuilt"]
    return {
        "dissemination": args.dissemination,
        "validators": n,
        "blobs": args.blobs,
        "blob_bytes": args.size,
        "heights": tip - first_height,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "p2p_mib_sent_per_node": sorted(round(s / 2**20, 1) for s in sent),
        "p2p_mib_sent": round(sum(sent) / 2**20, 1),
        **{c: sum(metric(base, i, f"lamina_{c}_total") for i in range(n)) for c in counters},
    }


if __name__ == "__main__":
    main()
