#!/usr/bin/env python3
"""Independent float64 reference for attention traces (Python 3 standard library only).

For every trace listed in TRACE_DIR/manifest.json this script
  1. reads q, K, V, o (.npy) with `struct` (no NumPy),
  2. recomputes dense attention softmax(scale * q K^T) V in float64 and compares it with
     o.npy: the error reported is, per query head, ||y_h - o_h|| / ||o_h||, and the trace's
     value is the maximum over heads; the script exits 1 if any trace exceeds 1e-6,
  3. optionally (--rank/--top-k/--local) computes the SparQ output in float64, exactly as
     docs/sparq-semantics.md specifies, and reports against o:
       rel_err    ||y - o|| / ||o|| over all heads together
       cosine     <y, o> / (||y|| ||o||) over all heads together
       alpha_mean mean over query heads of alpha_h (approximate mass fetched)
       recall     mean over query heads of the true (dense) attention mass on the chosen
                  positions i2

It is the oracle the C++ evaluation tool's numbers are compared against, so it shares no code
with the library. Usage:

  python3 tests/check_trace_reference.py TRACE_DIR
  python3 tests/check_trace_reference.py TRACE_DIR --rank 16 --top-k 64 --local 16
  python3 tests/check_trace_reference.py TRACE_DIR -r 16 -k 64 -l 16 --no-reallocate \\
      --json out.json [--trace t0_L2_S512 ...]

--json writes every number printed plus, per trace and KV group, the chosen components i1
(sorted by rank) and positions i2 (ascending), and the SparQ output y [n_q_heads][head_dim],
so the C++ tool can compare selections as sets and outputs element by element.

Choices the spec leaves open, fixed here (and documented for the C++ side):
  - coverage_h: if sum_i |q_h[i]| == 0, coverage is taken as 1 (q_h is zero, every logit is
    0). If the selected components of q_h are all zero but others are not (coverage 0), the
    approximate logits are all 0 (uniform s_hat) instead of 0/0.
  - k >= S: every position is chosen and alpha_h is exactly 1 (the spec's invariant), not the
    rounded sum of s_hat.
  - Position choice when k < S: the last l positions (S-l .. S-1) are taken first; the other
    k - l are the largest `sel` among positions 0 .. S-l-1, lower index winning exact ties.
"""

import argparse
import ast
import json
import math
import operator
import os
import struct
import sys
import time

DENSE_TOL = 1e-6

# ----------------------------------------------------------------------------------------
# .npy reading


class TraceError(Exception):
    pass


_DTYPES = {"<f2": ("e", 2), "<f4": ("f", 4), "<f8": ("d", 8)}


def read_npy(path):
    """Returns (shape tuple, flat list of Python floats). Versions 1.0/2.0, <f2/<f4/<f8, C order."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise TraceError("%s: cannot read: %s" % (path, e.strerror))
    if raw[:6] != b"\x93NUMPY":
        raise TraceError("%s: bad magic, not a .npy file" % path)
    if len(raw) < 10:
        raise TraceError("%s: truncated preamble" % path)
    major, minor = raw[6], raw[7]
    if (major, minor) == (1, 0):
        (hlen,), off = struct.unpack_from("<H", raw, 8), 10
    elif (major, minor) == (2, 0):
        if len(raw) < 12:
            raise TraceError("%s: truncated preamble" % path)
        (hlen,), off = struct.unpack_from("<I", raw, 8), 12
    else:
        raise TraceError("%s: unsupported .npy version %d.%d" % (path, major, minor))
    if off + hlen > len(raw):
        raise TraceError("%s: truncated header" % path)
    try:
        header = ast.literal_eval(raw[off:off + hlen].decode("latin1"))
    except (ValueError, SyntaxError) as e:
        raise TraceError("%s: malformed header dict: %s" % (path, e))
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise TraceError("%s: malformed header dict" % path)
    descr = header["descr"]
    if descr not in _DTYPES:
        raise TraceError("%s: unsupported dtype %r (supported: '<f2', '<f4', '<f8')" % (path, descr))
    if header["fortran_order"]:
        raise TraceError("%s: fortran_order True is not supported" % path)
    shape = tuple(header["shape"])
    code, size = _DTYPES[descr]
    n = 1
    for e in shape:
        n *= e
    data = raw[off + hlen:]
    if len(data) != n * size:
        raise TraceError("%s: expected %d data bytes for shape %s, found %d"
                         % (path, n * size, shape, len(data)))
    return shape, list(struct.unpack("<%d%s" % (n, code), data))


# ----------------------------------------------------------------------------------------
# Manifest


def read_manifest(trace_dir):
    path = os.path.join(trace_dir, "manifest.json")
    with open(path, "r", encoding="utf-8") as f:
        m = json.load(f)
    out = []
    for rec in m["traces"]:
        def field(key, default=None):
            if key in rec:
                return rec[key]
            if key in m:
                return m[key]
            if default is None:
                raise TraceError("%s: trace %r: %r missing" % (path, rec.get("id"), key))
            return default

        info = {
            "id": rec["id"],
            "dir": rec.get("dir", rec["id"]),
            "layer": rec.get("layer", -1),
            "S": field("S"),
            "n_q_heads": field("n_q_heads"),
            "n_kv_heads": field("n_kv_heads"),
            "head_dim": field("head_dim"),
        }
        n_kv = info["n_kv_heads"]
        info["gqa_group"] = field("gqa_group", info["n_q_heads"] // n_kv if n_kv else 0)
        info["softmax_scale"] = field("softmax_scale", 1.0 / math.sqrt(info["head_dim"]))
        files = {"q": "q.npy", "K": "K.npy", "V": "V.npy", "o": "o.npy"}
        files.update(field("files", {}) or {})
        info["files"] = files
        out.append(info)
    return out


def load_trace(trace_dir, info):
    nq, nkv, d, S = info["n_q_heads"], info["n_kv_heads"], info["head_dim"], info["S"]
    if S <= 0 or d <= 0 or nkv <= 0 or nq % nkv or info["gqa_group"] != nq // nkv:
        raise TraceError("trace %r: inconsistent sizes in manifest" % info["id"])
    base = os.path.join(trace_dir, info["dir"])
    want = {"q": (nq, d), "K": (nkv, S, d), "V": (nkv, S, d), "o": (nq, d)}
    arrays = {}
    for key, shape in want.items():
        path = os.path.join(base, info["files"][key])
        got, flat = read_npy(path)
        if got != shape:
            raise TraceError("trace %r: %s: shape %s, expected %s" % (info["id"], path, got, shape))
        arrays[key] = flat
    # Nested lists: q[h] (d floats), K[j][s] (d floats), V[j][s], o[h].
    q = [arrays["q"][h * d:(h + 1) * d] for h in range(nq)]
    o = [arrays["o"][h * d:(h + 1) * d] for h in range(nq)]
    K = [[arrays["K"][(j * S + s) * d:(j * S + s + 1) * d] for s in range(S)] for j in range(nkv)]
    V = [[arrays["V"][(j * S + s) * d:(j * S + s + 1) * d] for s in range(S)] for j in range(nkv)]
    return q, K, V, o


# ----------------------------------------------------------------------------------------
# Float64 math


def dot(a, b):
    return sum(map(operator.mul, a, b))


def softmax(logits):
    m = max(logits)
    e = [math.exp(x - m) for x in logits]
    z = sum(e)
    return [x / z for x in e]


def weighted_rows(weights, rows, d):
    """sum_s weights[s] * rows[s], for d-element rows (column-wise dot products)."""
    return [dot(weights, col) for col in zip(*rows)] if rows else [0.0] * d


def norm(v):
    return math.sqrt(sum(x * x for x in v))


def dense_attention(q, K, V, scale, group):
    """Returns (outputs y[h], probabilities p[h][s]) in float64."""
    ys, ps = [], []
    for h, qh in enumerate(q):
        j = h // group
        p = softmax([dot(qh, k) * scale for k in K[j]])
        ys.append(weighted_rows(p, V[j], len(qh)))
        ps.append(p)
    return ys, ps


def sparq_group(qs, Kj, Vj, scale, r, k, l, reallocate):
    """SparQ for one KV group (queries qs share Kj, Vj), per docs/sparq-semantics.md.

    Returns (y list per head, alpha list per head, i1, i2 ascending)."""
    d = len(qs[0])
    S = len(Kj)
    # 1. Component choice: r largest of sum_h |q_h|, lower index wins ties.
    a = [sum(abs(qh[i]) for qh in qs) for i in range(d)]
    i1 = sorted(range(d), key=lambda i: (-a[i], i))[:r]
    # 2. Approximate scores with the coverage temperature.
    Ksub = [[row[i] for i in i1] for row in Kj]
    s_hats = []
    for qh in qs:
        total = sum(abs(x) for x in qh)
        part = sum(abs(qh[i]) for i in i1)
        if total == 0.0:
            coverage = 1.0
        else:
            coverage = part / total
        qsub = [qh[i] for i in i1]
        if coverage == 0.0:
            logits = [0.0] * S
        else:
            f = scale / math.sqrt(coverage)
            logits = [dot(qsub, ks) * f for ks in Ksub]
        s_hats.append(softmax(logits))
    # 3. Position choice: group-summed probabilities, last l positions forced, top-k.
    if k >= S:
        i2 = list(range(S))
        everything = True
    else:
        everything = False
        sel = [sum(col) for col in zip(*s_hats)]
        local = list(range(S - l, S))
        rest = sorted(range(S - l), key=lambda s: (-sel[s], s))[:k - l]
        i2 = sorted(rest + local)
    # 4. Exact attention on the chosen rows; 5. mean-value reallocation.
    Ksel = [Kj[s] for s in i2]
    Vsel = [Vj[s] for s in i2]
    v_mean = [x / S for x in (sum(col) for col in zip(*Vj))]
    ys, alphas = [], []
    for qh, s_hat in zip(qs, s_hats):
        w = softmax([dot(qh, ks) * scale for ks in Ksel])
        y1 = weighted_rows(w, Vsel, d)
        alpha = 1.0 if everything else sum(s_hat[s] for s in i2)
        if reallocate:
            y = [alpha * a_ + (1.0 - alpha) * m_ for a_, m_ in zip(y1, v_mean)]
        else:
            y = y1
        ys.append(y)
        alphas.append(alpha)
    return ys, alphas, i1, i2


def sparq_trace(q, K, V, scale, group, r, k, l, reallocate):
    ys, alphas, i1s, i2s = [], [], [], []
    for j in range(len(K)):
        qs = q[j * group:(j + 1) * group]
        y, al, i1, i2 = sparq_group(qs, K[j], V[j], scale, r, k, l, reallocate)
        ys += y
        alphas += al
        i1s.append(i1)
        i2s.append(i2)
    return ys, alphas, i1s, i2s


# ----------------------------------------------------------------------------------------
# Driver


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trace_dir")
    ap.add_argument("-r", "--rank", type=int, help="SparQ r: query components (1..head_dim)")
    ap.add_argument("-k", "--top-k", type=int, help="SparQ k: positions gathered (>= 1)")
    ap.add_argument("-l", "--local", type=int, help="SparQ l: local window (0..k)")
    ap.add_argument("--no-reallocate", action="store_true", help="turn mean-value reallocation off")
    ap.add_argument("--trace", action="append", help="only this trace id (repeatable)")
    ap.add_argument("--json", metavar="OUT", help="write all results as JSON to OUT")
    args = ap.parse_args()

    sparq_args = (args.rank, args.top_k, args.local)
    do_sparq = any(x is not None for x in sparq_args)
    if do_sparq and any(x is None for x in sparq_args):
        ap.error("--rank, --top-k and --local must be given together")
    if do_sparq:
        if args.top_k < 1:
            ap.error("--top-k must be >= 1")
        if not 0 <= args.local <= args.top_k:
            ap.error("--local must be in [0, top-k]")
        if args.rank < 1:
            ap.error("--rank must be >= 1")
    reallocate = not args.no_reallocate

    try:
        infos = read_manifest(args.trace_dir)
    except (OSError, ValueError, KeyError, TraceError) as e:
        print("error: cannot read manifest: %s" % e, file=sys.stderr)
        return 2
    if args.trace:
        wanted = set(args.trace)
        infos = [i for i in infos if i["id"] in wanted]
        missing = wanted - {i["id"] for i in infos}
        if missing:
            print("error: no such trace(s): %s" % ", ".join(sorted(missing)), file=sys.stderr)
            return 2

    results = []
    failed = False
    header = "%-14s %6s  %-12s %-12s" % ("trace", "S", "dense_maxrel", "dense_maxabs")
    if do_sparq:
        header += "  %-12s %-12s %-10s %-10s" % ("rel_err", "cosine", "alpha_mean", "recall")
        print("SparQ r=%d k=%d l=%d reallocate=%s" % (args.rank, args.top_k, args.local,
                                                      "on" if reallocate else "off"))
    print(header)
    t_start = time.time()
    for info in infos:
        tid = info["id"]
        try:
            q, K, V, o = load_trace(args.trace_dir, info)
        except TraceError as e:
            print("%-14s skipped: %s" % (tid, e))
            results.append({"id": tid, "error": str(e)})
            failed = True
            continue
        scale, group, d, S = info["softmax_scale"], info["gqa_group"], info["head_dim"], info["S"]
        yd, p = dense_attention(q, K, V, scale, group)
        rel = [norm([a - b for a, b in zip(yh, oh)]) / norm(oh) for yh, oh in zip(yd, o)]
        maxrel = max(rel)
        maxabs = max(abs(a - b) for yh, oh in zip(yd, o) for a, b in zip(yh, oh))
        res = {"id": tid, "S": S, "layer": info["layer"], "dense_max_rel_err": maxrel,
               "dense_max_abs_err": maxabs}
        line = "%-14s %6d  %-12.3e %-12.3e" % (tid, S, maxrel, maxabs)
        if maxrel > DENSE_TOL:
            failed = True
            line += "  FAIL(dense)"
        if do_sparq:
            if args.rank > d:
                msg = "--rank %d > head_dim %d" % (args.rank, d)
                print("%-14s skipped: %s" % (tid, msg))
                results.append({"id": tid, "error": msg})
                failed = True
                continue
            y, alphas, i1s, i2s = sparq_trace(q, K, V, scale, group, args.rank, args.top_k,
                                              args.local, reallocate)
            yf = [x for yh in y for x in yh]
            of = [x for oh in o for x in oh]
            rel_err = norm([a - b for a, b in zip(yf, of)]) / norm(of)
            cosine = dot(yf, of) / (norm(yf) * norm(of))
            alpha_mean = sum(alphas) / len(alphas)
            recall = sum(sum(p[h][s] for s in i2s[h // group]) for h in range(len(q))) / len(q)
            line += "  %-12.4e %-12.8f %-10.6f %-10.6f" % (rel_err, cosine, alpha_mean, recall)
            res.update({"rel_err": rel_err, "cosine": cosine, "alpha_mean": alpha_mean,
                        "recall": recall, "alpha": alphas, "i1": i1s, "i2": i2s, "y": y})
        print(line)
        results.append(res)
    elapsed = time.time() - t_start

    ok = [r for r in results if "error" not in r]
    if ok:
        print("max dense rel err over %d traces: %.3e (tolerance %.0e)"
              % (len(ok), max(r["dense_max_rel_err"] for r in ok), DENSE_TOL))
        if do_sparq:
            n = len(ok)
            print("mean over traces: rel_err %.4e  cosine %.8f  alpha_mean %.6f  recall %.6f"
                  % (sum(r["rel_err"] for r in ok) / n, sum(r["cosine"] for r in ok) / n,
                     sum(r["alpha_mean"] for r in ok) / n, sum(r["recall"] for r in ok) / n))
    print("elapsed %.1f s" % elapsed)

    if args.json:
        doc = {"trace_dir": os.path.abspath(args.trace_dir), "dense_tolerance": DENSE_TOL,
               "settings": ({"rank": args.rank, "top_k": args.top_k, "local": args.local,
                             "reallocate": reallocate} if do_sparq else None),
               "traces": results}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
