#!/usr/bin/env python3
"""How much communication an overlapped schedule hides, from a loom Chrome trace (trace.json).

    python3 bench/overlap.py RUN_DIR/trace.json

For every overlapped forward-and-backward pair (actions of category "F&B", DualPipe's chunk pairs with the
DeepSeek-V3 recipe), the comm ops of that rank that run inside the pair (dispatch and combine) are
compared with the union of the rank's compute ops over the same time: the hidden fraction is the comm
time that some compute op covers. A comm op shows in the trace as its busy halves (its send half and its
receive half; the wait for the peers between them is not drawn), so this is the fraction of the work of
communication that ran under computation; report.json's measured.comm has the same figure
(pair_hidden_fraction) and the stricter one that counts the waits as exposed (pair_span_hidden_fraction).
The pair's duration is compared with a forward alone plus a backward
alone (the schedule's unpaired F and B actions) on the same rank. Medians, so the first step's warm-up
does not dominate. Prints one line per measure and exits 1 when the trace has no F&B pair.
"""
import json
import statistics
import sys
from collections import defaultdict


def union_length(intervals, lo, hi):
    """Length of [lo, hi) covered by the union of `intervals` (sorted by start)."""
    covered, cursor = 0.0, lo
    for a, b in intervals:
        if b <= cursor:
            continue
        if a >= hi:
            break
        a, b = max(a, cursor), min(b, hi)
        if b > a:
            covered += b - a
            cursor = b
    return covered


def main():
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(sys.argv) == 2 else 2
    path = sys.argv[1]
    try:
        with open(path) as f:
            trace = json.load(f)
        events = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    except OSError as e:
        print(f"overlap.py: {path}: {e.strerror}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as e:
        print(f"overlap.py: {path}:{e.lineno}:{e.colno}: not JSON: {e.msg}", file=sys.stderr)
        return 2
    except (KeyError, TypeError, AttributeError):
        print(f"overlap.py: {path}: not a loom trace (no traceEvents list)", file=sys.stderr)
        return 2
    by_rank = defaultdict(lambda: {"actions": [], "compute": [], "comm": []})
    for e in events:
        lane = {0: "actions", 1: "compute", 2: "comm"}.get(e["tid"])
        if lane:
            by_rank[e["pid"]][lane].append((e["ts"], e["ts"] + e["dur"], e.get("cat", ""), e["name"]))

    comm_total = hidden_total = 0.0
    pair_ms, fwd_ms, bwd_ms, hidden_fractions = [], [], [], []
    for lanes in by_rank.values():
        compute = sorted((a, b) for a, b, _, _ in lanes["compute"])
        comm = sorted((a, b) for a, b, _, _ in lanes["comm"])
        for start, end, cat, _ in lanes["actions"]:
            if cat == "F":
                fwd_ms.append((end - start) / 1e3)
            elif cat == "B":
                bwd_ms.append((end - start) / 1e3)
            elif cat == "F&B":
                pair_ms.append((end - start) / 1e3)
                inside = [(a, b) for a, b in comm if a >= start and b <= end + 1e-3]
                total = sum(b - a for a, b in inside)
                hidden = sum(union_length(compute, a, b) for a, b in inside)
                comm_total += total
                hidden_total += hidden
                if total > 0:
                    hidden_fractions.append(hidden / total)
    if not pair_ms:
        print("overlap.py: no F&B pair in this trace (an overlapped schedule such as dualpipe has them)", file=sys.stderr)
        return 1
    print(f"pairs {len(pair_ms)}")
    print(f"comm_hidden_fraction {hidden_total / comm_total if comm_total else 0:.3f}   (all pairs' comm time under compute)")
    print(f"comm_hidden_fraction_median {statistics.median(hidden_fractions) if hidden_fractions else 0:.3f}   (per pair)")
    print(f"comm_ms_per_pair {comm_total / 1e3 / len(pair_ms):.3f}")
    pair = statistics.median(pair_ms)
    print(f"pair_ms {pair:.3f}   (median F&B pair)")
    if fwd_ms and bwd_ms:
        alone = statistics.median(fwd_ms) + statistics.median(bwd_ms)
        print(f"f_plus_b_ms {alone:.3f}   (median F alone + median B alone)")
        print(f"pair_over_f_plus_b {pair / alone:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
