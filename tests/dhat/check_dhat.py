#!/usr/bin/env python3
"""Independent check of sparq's traffic counters with valgrind DHAT.

Runs tests/dhat/dhat_step (one SparQ step and one dense step over K, Kt, V, v_mean held in
separate heap blocks, one allocation function per block) under `valgrind --tool=dhat`,
reads DHAT's JSON profile, attributes the bytes read ("rb") of every block to its arena by
the allocation function on its stack (and checks the block size "tb" matches), and compares
them with what sparq::traffic_counter reported (the program's stdout, JSON).

What the two measure differs in one known way. DHAT counts bytes moved by load
instructions; the traffic counter counts bytes fetched per KV group (memory traffic), as
the spec defines it. When g query heads share a KV head, the kernels load v_mean
(reallocate) once per head, from L1, and each Kt run once per block of 4 heads
(approx_chunk<4, NC>) in the SIMD body and once per head in the scalar tail. The K and V rows
of a step's n positions: the blocked attention kernels (SIMD builds, d = 64 or 128:
attend_online_lanes, and attend_online_16 on AVX-512) load each row once per block of 4
heads, and the K rows of a last partial block of `lanes` rows are padded with the block's
first row (read again, masked out); the generic kernel (scalar builds, other d) loads each row
once per head (dot_row, accumulate_rows). So the expected ratio DHAT / ours is

    K            : ceil(g / 4) * ceil(n / lanes) * lanes / n   (blocked; n = S for dense)
    V            : ceil(g / 4)                                 (blocked)
    K, V         : g                                           (generic)
    v_mean       : g
    Kt           : (body * ceil(g / 4) + tail * g) / S,   body = S - S % lanes, tail = S % lanes
                   (g in a scalar build, lanes = 1)

which is 1 for every arena when g = 1 and n is a multiple of lanes. The check divides DHAT's bytes by that factor and
requires agreement within --tolerance (default 3%). Vector loads are exact (no masked or
over-reading tails: the SIMD loops stop at whole vectors and finish in scalar code) and
prefetches are not loads, so the observed difference is 0 bytes in practice.

Python 3 standard library only. Exit status: 0 when every comparison agrees, 1 otherwise,
2 on a usage or run error.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

ARENAS = ("K", "Kt", "V", "v_mean")
SITES = {
    ("sparq", "K"): "dhat_block_sparq_K",
    ("sparq", "Kt"): "dhat_block_sparq_Kt",
    ("sparq", "V"): "dhat_block_sparq_V",
    ("sparq", "v_mean"): "dhat_block_sparq_v_mean",
    ("dense", "K"): "dhat_block_dense_K",
    ("dense", "V"): "dhat_block_dense_V",
}

# dtype, g, S, d, r, k, l. Under ~60 s in total; S = 4096, d = 128 is the headline shape.
DEFAULT_CASES = [
    ("f32", 1, 4096, 128, 32, 128, 32),
    ("f16", 4, 4096, 128, 32, 128, 32),
    ("bf16", 8, 4096, 128, 16, 256, 64),
    ("f16", 1, 1001, 96, 8, 50, 10),   # scalar tails (S % lanes != 0, d % lanes != 0 at f16)
    ("f32", 3, 999, 64, 8, 64, 8),     # Kt scalar tail read once per head (g = 3)
    ("bf16", 2, 300, 40, 4, 512, 0),   # k >= S: no Kt, no v_mean, every row
]


def fail(msg):
    print("check_dhat: " + msg, file=sys.stderr)
    sys.exit(2)


def run_case(valgrind, program, case, workdir):
    dtype, g, S, d, r, k, l = case
    out_file = os.path.join(workdir, "dhat.%s.g%d.S%d.json" % (dtype, g, S))
    cmd = [valgrind, "--tool=dhat", "--dhat-out-file=" + out_file, program,
           dtype, str(g), str(S), str(d), str(r), str(k), str(l)]
    t0 = time.time()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)
    elapsed = time.time() - t0
    if proc.returncode != 0:
        fail("%s exited with %d:\n%s" % (" ".join(cmd), proc.returncode, proc.stderr[-4000:]))
    try:
        ours = json.loads(proc.stdout)
    except ValueError as e:
        fail("cannot parse the program's JSON (%s):\n%s" % (e, proc.stdout[:2000]))
    with open(out_file) as f:
        dhat = json.load(f)
    return ours, dhat, elapsed


def dhat_blocks(dhat):
    """Allocation function name -> list of program points (pp dicts) allocated under it."""
    if dhat.get("dhatFileVersion") != 2 or dhat.get("mode") != "heap":
        fail("unexpected DHAT file (dhatFileVersion %r, mode %r); valgrind 3.15+ heap mode"
             " expected" % (dhat.get("dhatFileVersion"), dhat.get("mode")))
    ftbl = dhat["ftbl"]
    found = {}
    for pp in dhat["pps"]:
        frames = [ftbl[i] for i in pp["fs"]]
        for site in SITES.values():
            if any(site + "(" in fr for fr in frames):
                found.setdefault(site, []).append(pp)
    return found


def instruction_factor(kind, arena, ours):
    """Expected DHAT load bytes / traffic bytes for one arena (see the module docstring)."""
    g, S, lanes = ours["g"], ours["S"], ours["lanes"]
    if arena in ("K", "V"):
        if lanes == 1 or ours["d"] not in (64, 128):  # the generic kernel
            return float(g)
        n = S if kind == "dense" else ours["n_positions"]
        groups = math.ceil(g / 4.0)
        if arena == "V":
            return float(groups)
        return groups * math.ceil(n / float(lanes)) * lanes / float(n)
    if arena == "v_mean":
        return float(g)
    if lanes == 1:  # scalar build (SPARQ_NO_SIMD): every position goes through approx_tail
        return float(g)
    tail = S % lanes
    body = S - tail
    return (body * math.ceil(g / 4.0) + tail * g) / float(S)


def closed_form(kind, arena, ours):
    """The spec's bytes for one step (what the unit tests pin too)."""
    es, S, d, r, k = ours["elem_bytes"], ours["S"], ours["d"], ours["r"], ours["k"]
    sparse = k < S
    n = min(k, S)
    if kind == "dense":
        return {"K": S * d * es, "V": S * d * es}.get(arena, 0)
    return {"K": n * d * es, "V": n * d * es, "Kt": S * r * es if sparse else 0,
            "v_mean": d * 4 if sparse and ours["reallocate"] else 0}[arena]


def check_case(case, ours, dhat, tol):
    ok = True
    blocks = dhat_blocks(dhat)
    rows = []
    totals = {"sparq": [0, 0.0, 0], "dense": [0, 0.0, 0]}  # ours, dhat / factor, dhat raw
    for (kind, arena), site in SITES.items():
        pps = blocks.get(site, [])
        if len(pps) != 1 or pps[0]["tbk"] != 1:
            print("  FAIL %s/%s: expected one block from %s, DHAT has %d program points"
                  % (kind, arena, site, len(pps)))
            ok = False
            continue
        pp = pps[0]
        want_size = ours["blocks"][site]
        if pp["tb"] != want_size:
            print("  FAIL %s/%s: DHAT block is %d bytes, the program allocated %d"
                  % (kind, arena, pp["tb"], want_size))
            ok = False
        counted = ours[kind]["read"][arena]
        if counted != closed_form(kind, arena, ours):
            print("  FAIL %s/%s: traffic_counter %d != closed form %d"
                  % (kind, arena, counted, closed_form(kind, arena, ours)))
            ok = False
        factor = instruction_factor(kind, arena, ours)
        raw = pp["rb"]
        per_group = raw / factor
        if counted == 0:
            good = raw == 0
            rel = 0.0 if good else float("inf")
        else:
            rel = (per_group - counted) / counted
            good = abs(rel) <= tol
        ok = ok and good
        totals[kind][0] += counted
        totals[kind][1] += per_group
        totals[kind][2] += raw
        rows.append((kind, arena, counted, raw, factor, per_group, rel, good))

    print("  %-6s %-7s %12s %12s %7s %12s %8s" % ("step", "arena", "ours", "DHAT rb",
                                                  "factor", "DHAT/factor", "diff"))
    for kind, arena, counted, raw, factor, per_group, rel, good in rows:
        print("  %-6s %-7s %12d %12d %7.3f %12.0f %7.2f%% %s"
              % (kind, arena, counted, raw, factor, per_group, 100.0 * rel,
                 "ok" if good else "FAIL"))
    s, dn = totals["sparq"], totals["dense"]
    if s[0] and dn[0]:
        print("  SparQ / dense bytes read: ours %d / %d = 1/%.2f;  DHAT (per group) %.0f / %.0f"
              " = 1/%.2f;  DHAT (load instructions) %d / %d = 1/%.2f"
              % (s[0], dn[0], dn[0] / float(s[0]), s[1], dn[1], dn[1] / s[1], s[2], dn[2],
                 dn[2] / float(s[2])))
    return ok, rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("program", help="path to the dhat_step executable")
    ap.add_argument("--valgrind", default="valgrind")
    ap.add_argument("--tolerance", type=float, default=0.03,
                    help="allowed relative difference per arena (default 0.03)")
    ap.add_argument("--case", action="append", default=[],
                    help="dtype,g,S,d,r,k,l (repeatable; default: a built-in set)")
    ap.add_argument("--json", help="write every comparison to this file")
    ap.add_argument("--keep", action="store_true", help="keep DHAT's output files")
    args = ap.parse_args()

    if not os.access(args.program, os.X_OK):
        fail("program %r is not executable" % args.program)
    cases = []
    for c in args.case:
        parts = c.split(",")
        if len(parts) != 7:
            fail("--case %r: expected dtype,g,S,d,r,k,l" % c)
        cases.append((parts[0],) + tuple(int(x) for x in parts[1:]))
    cases = cases or DEFAULT_CASES

    workdir = tempfile.mkdtemp(prefix="sparq-dhat-")
    all_ok = True
    report = []
    for case in cases:
        ours, dhat, elapsed = run_case(args.valgrind, args.program, case, workdir)
        print("case dtype=%s g=%d S=%d d=%d r=%d k=%d l=%d (lanes %d, %.1f s under valgrind)"
              % (case + (ours["lanes"], elapsed)))
        ok, rows = check_case(case, ours, dhat, args.tolerance)
        all_ok = all_ok and ok
        report.append({"case": list(case), "ok": ok, "rows": [
            {"step": r[0], "arena": r[1], "ours": r[2], "dhat_rb": r[3], "factor": r[4],
             "dhat_per_group": r[5], "rel_diff": r[6], "ok": r[7]} for r in rows]})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if not args.keep:
        for name in os.listdir(workdir):
            os.remove(os.path.join(workdir, name))
        os.rmdir(workdir)
    else:
        print("DHAT files kept in " + workdir)
    print("dhat check: " + ("all arenas agree" if all_ok else "MISMATCH"))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
