#!/usr/bin/env python3
"""Cross-check of sparq-eval against the independent float64 Python reference.

Usage: python3 tests/eval_check.py SPARQ_EVAL TRACE_DIR [--tol 1e-4]

For each of a set of SparQ settings, runs
    SPARQ_EVAL TRACE_DIR --rank r --top-k k --local l [--no-reallocate] --json A --detail
    python3 tests/check_trace_reference.py TRACE_DIR -r r -k k -l l [--no-reallocate] --json B
and asserts, per trace, that rel_err, recall and alpha_mean agree within TOL (absolute).
It also reports how many chosen positions (i2, compared as sets per KV head) differ; a few
can swap when two candidates' approximate scores differ only by float32 rounding, so that
count is informational. Python 3 standard library only. Exit status 0 when everything
agrees, 1 otherwise.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = os.path.join(HERE, "check_trace_reference.py")

# (rank, top_k, local, reallocate). Covers the sweep of docs/accuracy.md, reallocation off,
# full rank (r = d, exact s_hat), no local window, and k >= S (the dense path).
SETTINGS = [
    (8, 32, 16, True), (8, 64, 16, True), (8, 128, 16, True),
    (16, 32, 16, True), (16, 64, 16, True), (16, 128, 16, True),
    (32, 32, 16, True), (32, 64, 16, True), (32, 128, 16, True),
    (16, 128, 32, False), (8, 64, 16, False), (32, 32, 8, False),
    (64, 48, 0, True), (4, 16, 16, True), (16, 4096, 16, True),
]
FIELDS = ("rel_err", "recall", "alpha_mean")


def run(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True)
    if p.returncode != 0:
        sys.stderr.write("command failed (exit %d): %s\n%s%s" % (
            p.returncode, " ".join(cmd), p.stdout[-2000:], p.stderr[-2000:]))
        return False
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sparq_eval")
    ap.add_argument("trace_dir")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()

    failures = 0
    checked = 0
    worst = {f: 0.0 for f in FIELDS}
    i2_diff_total = 0
    i2_total = 0
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for (r, k, l, re) in SETTINGS:
            a_path = os.path.join(tmp, "eval.json")
            b_path = os.path.join(tmp, "ref.json")
            common = ["--rank", str(r), "--top-k", str(k), "--local", str(l)]
            if not re:
                common.append("--no-reallocate")
            if not run([args.sparq_eval, args.trace_dir] + common +
                       ["--json", a_path, "--detail", "--quiet"]):
                return 1
            if not run([sys.executable, REFERENCE, args.trace_dir] + common + ["--json", b_path]):
                return 1
            with open(a_path) as f:
                ours = {rec["trace"]: rec for rec in json.load(f)}
            with open(b_path) as f:
                ref = {rec["id"]: rec for rec in json.load(f)["traces"]}
            if set(ours) != set(ref):
                print("FAIL r=%d k=%d l=%d: trace sets differ: %s vs %s"
                      % (r, k, l, sorted(ours), sorted(ref)))
                failures += 1
                continue
            for tid in sorted(ref):
                a, b = ours[tid], ref[tid]
                if "error" in b:
                    print("FAIL %s: reference could not evaluate it: %s" % (tid, b["error"]))
                    failures += 1
                    continue
                diffs = {f: abs(a[f] - b[f]) for f in FIELDS}
                for f in FIELDS:
                    worst[f] = max(worst[f], diffs[f])
                n_diff = 0
                for sa, sb in zip(a["i2"], b["i2"]):
                    n_diff += len(set(sa) ^ set(sb)) // 2
                    i2_total += len(sb)
                i2_diff_total += n_diff
                bad = [f for f in FIELDS if not diffs[f] <= args.tol]
                checked += 1
                status = "FAIL" if bad else "ok"
                if bad:
                    failures += 1
                print("%-4s r=%-2d k=%-4d l=%-2d realloc=%-3s %-12s rel_err %.6e/%.6e "
                      "recall %.6f/%.6f alpha %.6f/%.6f  max|diff| %.1e  i2 swaps %d"
                      % (status, r, k, l, "on" if re else "off", tid, a["rel_err"], b["rel_err"],
                         a["recall"], b["recall"], a["alpha_mean"], b["alpha_mean"],
                         max(diffs.values()), n_diff))
    print("\n%d trace x setting comparisons, %d failed (tolerance %.0e absolute), %.1f s"
          % (checked, failures, args.tol, time.time() - t0))
    print("largest |sparq-eval - reference|: " +
          ", ".join("%s %.2e" % (f, worst[f]) for f in FIELDS))
    print("chosen positions differing from the reference: %d of %d" % (i2_diff_total, i2_total))
    return 1 if failures or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
