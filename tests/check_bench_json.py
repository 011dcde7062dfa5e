#!/usr/bin/env python3
"""Runs `sparq-bench --quick --json FILE` and checks what it wrote against issue 3's format.

Usage: check_bench_json.py PATH/TO/sparq-bench

Checks the structure and the numbers that do not depend on the machine's speed: the keys
issue 3 names, the cases (d = 128, 32 query / 8 KV heads, f16, r = 16, S in {4096, 16384,
65536}, k = S/16, l = k/4), that speedup, GB/s, roof fractions and the pattern reads' ratios
agree with the times and bytes they are derived from, that SparQ's bytes are the fraction of dense's that r and k
imply, and that the printed table has a row per case. Never checks a speed.
"""
import json
import math
import os
import subprocess
import sys
import tempfile

# Issue 3's keys, then the ones this script also reads.
REQUIRED = ["seq_len", "dtype", "head_dim", "q_heads", "kv_heads", "rank", "top_k",
            "dense_us", "sparq_us", "speedup", "dense_bytes", "sparq_bytes",
            "dense_roof_fraction", "sparq_roof_fraction",
            "local", "dense_gbps", "sparq_gbps", "case_roof_gbps", "case_roof_min_gbps",
            "case_roof_max_gbps", "unsteady", "pattern_us", "pattern_gbps",
            "pattern_roof_fraction", "pattern_us_over_sparq_us", "dense_pattern_us",
            "dense_pattern_gbps", "dense_pattern_roof_fraction", "dense_pattern_us_over_dense_us"]


def close(a, b, places):
    """a (printed with `places` decimals) agrees with b, computed from other printed values."""
    return math.isclose(a, b, rel_tol=2e-3, abs_tol=10.0 ** -places)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.json")
        run = subprocess.run([sys.argv[1], "--quick", "--json", path], capture_output=True,
                             text=True, timeout=600)
        if run.returncode != 0:
            sys.exit(f"sparq-bench exited {run.returncode}:\n{run.stdout}\n{run.stderr}")
        with open(path) as f:
            doc = json.load(f)

    roof = doc.get("roof_gbps")
    check(isinstance(roof, (int, float)) and roof > 0, f"roof_gbps: {roof!r}")
    cases = doc.get("cases", [])
    check([c.get("seq_len") for c in cases] == [4096, 16384, 65536],
          f"seq_len of the cases: {[c.get('seq_len') for c in cases]}")
    for c in cases:
        S = c.get("seq_len")
        missing = [k for k in REQUIRED if k not in c]
        check(not missing, f"S = {S}: missing keys {missing}")
        if missing:
            continue
        check((c["dtype"], c["head_dim"], c["q_heads"], c["kv_heads"], c["rank"]) ==
              ("f16", 128, 32, 8, 16), f"S = {S}: shape {c}")
        check(c["top_k"] == S // 16 and c["local"] == S // 64, f"S = {S}: k, l {c}")
        check(c["dense_us"] > 0 and c["sparq_us"] > 0, f"S = {S}: times {c}")
        check(close(c["speedup"], c["dense_us"] / c["sparq_us"], 4), f"S = {S}: speedup")
        # dense reads K and V of every head in full: 2 * S * d * 2 bytes per KV head.
        check(c["dense_bytes"] == 8 * 2 * S * 128 * 2, f"S = {S}: dense_bytes")
        # SparQ: r Kt rows of S, k + l K/V rows (l inside k), and v_mean, per KV head:
        # between (r S + 2 k d) * 2 and twice that.
        low = 8 * (16 * S + 2 * (S // 16) * 128) * 2
        check(low <= c["sparq_bytes"] <= 2 * low, f"S = {S}: sparq_bytes {c['sparq_bytes']}")
        for m in ("dense", "sparq"):
            gbps = c[f"{m}_bytes"] / c[f"{m}_us"] * 1e-3
            check(close(c[f"{m}_gbps"], gbps, 3), f"S = {S}: {m}_gbps")
            check(close(c[f"{m}_roof_fraction"], gbps / c["case_roof_gbps"], 4),
                  f"S = {S}: {m}_roof_fraction")
        # The pattern reads (plain reads of each method's bytes; sparq-bench checks their byte
        # counts itself): their GB/s, fractions and ratios to the steps.
        for pat, m in (("pattern", "sparq"), ("dense_pattern", "dense")):
            check(c[f"{pat}_us"] > 0, f"S = {S}: {pat}_us")
            if c[f"{pat}_us"] <= 0:
                continue
            gbps = c[f"{m}_bytes"] / c[f"{pat}_us"] * 1e-3
            check(close(c[f"{pat}_gbps"], gbps, 3), f"S = {S}: {pat}_gbps")
            check(close(c[f"{pat}_roof_fraction"], gbps / c["case_roof_gbps"], 4),
                  f"S = {S}: {pat}_roof_fraction")
            check(close(c[f"{pat}_us_over_{m}_us"], c[f"{pat}_us"] / c[f"{m}_us"], 4),
                  f"S = {S}: {pat}_us_over_{m}_us")
        check(c["case_roof_min_gbps"] <= c["case_roof_gbps"] <= c["case_roof_max_gbps"],
              f"S = {S}: roof samples")
        # The flag's two reasons, recomputed from printed (rounded) values: checked only
        # where rounding cannot decide them.
        spread = (c["case_roof_max_gbps"] - c["case_roof_min_gbps"]) / c["case_roof_gbps"]
        above = c["dense_gbps"] - c["case_roof_gbps"]
        check(isinstance(c.get("unsteady"), bool), f"S = {S}: unsteady {c.get('unsteady')!r}")
        if spread > 0.201 or above > 0.01:
            check(c.get("unsteady") is True, f"S = {S}: unsteady should be true")
        elif spread < 0.199 and above < -0.01:
            check(c.get("unsteady") is False, f"S = {S}: unsteady should be false")
        # The main table's row starts with S, k and l (the other tables have S then "|").
        row = [str(S), str(S // 16), str(S // 64)]
        check(sum(line.split()[:3] == row for line in run.stdout.splitlines()) == 1,
              f"S = {S}: not one main-table row in the output")

    if failures:
        print(run.stdout)
        sys.exit("FAILED:\n  " + "\n  ".join(failures))
    print(f"sparq-bench JSON: {len(cases)} cases checked")


if __name__ == "__main__":
    main()
