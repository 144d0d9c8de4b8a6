#!/usr/bin/env python3
"""Where the GPU time of a run went, from bench/kernel_trace.cpp's CSV.

    python3 bench/kernel_trace.py kernels.1234.csv [--from-ms T]

Streams that ran a row mover or route-plan kernel are the comm streams; the rest are compute.
For each kind, and for the kernels of each name: how many, their time on the GPU, and how long
they waited after being submitted before their first block started (`start - submitted`: no room
on the SMs). A copy has no submitted time; it counts as running. --from-ms drops the records
that start before that many ms after the first one (a run's first step warms up).
"""
import argparse
import collections
import csv
import re
import subprocess

COMM_KERNELS = re.compile(r"permute_rows|gather_sum|unpermute|plan_count|plan_scan|plan_scatter|choose_slots")


def short_names(names):
    """Mangled name -> the kernel's own name, without namespaces, template arguments or parameters."""
    names = sorted(set(names))
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        out = names
    result = {}
    for raw, pretty in zip(names, out):
        depth, plain = 0, []
        for ch in pretty.split("(")[0]:
            depth += ch == "<"
            if depth == 0:
                plain.append(ch)
            depth -= ch == ">"
        result[raw] = "".join(plain).split("::")[-1].strip() or raw[:60]
    return result


def union(intervals):
    total, end = 0, None
    for s, e in sorted(intervals):
        if end is None or s > end:
            total += e - s
            end = e
        elif e > end:
            total += e - end
            end = e
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv", nargs="+", help="one file per process; each is summarised on its own")
    ap.add_argument("--from-ms", type=float, default=0.0)
    args = ap.parse_args()
    for path in args.csv:
        summarise(path, args.from_ms)


def summarise(path, from_ms):
    rows = []
    with open(path) as f:
        for r in csv.DictReader(f):
            rows.append(r)
    if not rows:
        print(f"{path}: no records")
        return
    for r in rows:
        for k in ("start", "end", "queued", "submitted", "grid", "block"):
            r[k] = int(r[k])
        r["stream"] = int(r["stream"])
    pretty = short_names(r["name"] for r in rows if r["what"] == "kernel")
    for r in rows:
        r["short"] = pretty[r["name"]] if r["what"] == "kernel" else r["what"]
    t0 = min(r["start"] for r in rows)
    rows = [r for r in rows if r["start"] - t0 >= from_ms * 1e6]
    comm_streams = {r["stream"] for r in rows if r["what"] == "kernel" and COMM_KERNELS.search(r["name"])}
    span = (max(r["end"] for r in rows) - min(r["start"] for r in rows)) / 1e6
    print(f"{path}: {len(rows)} records over {span:.1f} ms; {len(comm_streams)} comm streams")
    by_class = collections.defaultdict(list)
    for r in rows:
        by_class["comm" if r["stream"] in comm_streams else "compute"].append(r)
    gpu_busy = union([(r["start"], r["end"]) for r in rows if r["what"] == "kernel"]) / 1e6
    print(f"some kernel running: {gpu_busy:.1f} ms of {span:.1f}")
    for cls, rs in sorted(by_class.items()):
        kern = [r for r in rs if r["what"] == "kernel"]
        run = sum(r["end"] - r["start"] for r in rs) / 1e6
        wait = sum(max(0, r["start"] - r["submitted"]) for r in kern if r["submitted"]) / 1e6
        print(f"\n{cls}: {len(rs)} records, {run:.1f} ms on the GPU, {wait:.1f} ms waiting for SMs after submission")
        names = collections.defaultdict(lambda: [0, 0, 0, 0])
        for r in rs:
            n = names[r["short"]]
            n[0] += 1
            n[1] += r["end"] - r["start"]
            if r["what"] == "kernel" and r["submitted"]:
                n[2] += max(0, r["start"] - r["submitted"])
            n[3] = max(n[3], r["grid"])
        print(f"  {'what':40s} {'count':>7s} {'GPU ms':>9s} {'mean us':>8s} {'wait ms':>9s} {'max grid':>9s}")
        for name, (count, t, w, g) in sorted(names.items(), key=lambda x: -x[1][1])[:16]:
            print(f"  {name:40s} {count:7d} {t / 1e6:9.2f} {t / count / 1e3:8.1f} {w / 1e6:9.2f} {g:9d}")


if __name__ == "__main__":
    main()
