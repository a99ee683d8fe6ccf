#!/usr/bin/python3
"""Merges the JSON lines of benchmarks/Bench and benchmarks/torch_bench.py (written by run.sh) into
docs/benchmarks/{gradients,hvp}.md and the raw docs/benchmarks/{gradients,hvp}.json.

    report.py RAW_DIR OUT_DIR      # RAW_DIR holds meta.json, grad.jsonl, hvp.jsonl
    report.py OUT_DIR              # rewrites the .md from the .json already in OUT_DIR
"""
import json
import os
import sys
from collections import defaultdict

if len(sys.argv) == 2:
    raw, out = None, sys.argv[1]
    saved = {mode: json.load(open(os.path.join(out, name + ".json")))
             for mode, name in (("grad", "gradients"), ("hvp", "hvp")) if os.path.exists(os.path.join(out, name + ".json"))}
    meta = next(iter(saved.values()))["meta"]
else:
    raw, out = sys.argv[1], sys.argv[2]
    saved = {}
    meta = json.load(open(os.path.join(raw, "meta.json")))


def rows(mode):
    if raw is None:
        return saved[mode]["results"] if mode in saved else []
    path = os.path.join(raw, mode + ".jsonl")
    return [json.loads(l) for l in open(path) if l.strip()] if os.path.exists(path) else []


def best(group, key):
    """The round with the lowest value of `key` (run-to-run noise on a shared machine only ever adds time)."""
    ok = [r for r in group if r.get("status") == "ok"]
    return min(ok, key=lambda r: r[key]) if ok else group[0]


def f(x, digits=3):
    if x is None:
        return "—"
    if x >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}" if x < 100 else f"{x:.0f}"


def ratio(a, b):
    return "—" if a is None or b is None else f"**{a / b:.2f}×**"


def machine(m):
    return "\n".join([
        f"- Date: {m['date']}, commit `{m['commit']}`",
        f"- CPU: {m['cpu']}, {m['cores']} cores visible (`nproc`); {m['os']}, kernel {m['kernel']}",
        f"- Load average (1/5/15 min) at start: {m['loadavg_start']}, at end: {m.get('loadavg_end', '?')}"
        " (the cores are shared with other jobs)",
        f"- Ours: .NET SDK {m['dotnet']}, ONNX Runtime {m['onnxruntime']} (CPU execution provider, "
        "graph optimisation ORT_ENABLE_ALL, InterOpNumThreads 1)",
        f"- PyTorch {m['torch']}" + (f" (Debian python3-torch {m['torch_package']})" if m.get("torch_package") else "") + f" (eager, BLAS: {m['torch_blas']}), Python {m['python']}, NumPy {m['numpy']}, ONNX {m['onnx']}",
        f"- Each side's best of {m['rounds']} alternating rounds (lowest median); each figure is the median of {m['repeats']}"
        " timed samples, each a block of calls lasting ≥ 50 ms, after ≥ 300 ms of warm-up (fewer samples, at least 3,"
        " where they pass 10 s). Hutchinson: median of up to "
        f"{max(3, m['repeats'] // 2)} single runs (at least 1, fewer where they pass 10 s), after a 2-probe warm-up."
        " The raw `.json` also has the fastest sample (`*_min`) and the process CPU time per call (`*cpu_ms`)",
    ])


def caveats(m):
    """Warnings derived from the machine description: a busy machine, or as many threads as cores."""
    out = []
    loads = [float(m[k].split()[0]) for k in ("loadavg_start", "loadavg_end") if m.get(k)]
    busy = any(l >= m["cores"] * 0.75 for l in loads)
    most = max((int(t) for t in m["threads"]), default=1)
    if busy:
        out.append(f"**The machine was busy** (1-minute load {' → '.join(f'{l:.1f}' for l in loads)} on {m['cores']} cores): "
                   "other jobs took CPU time during the run, so figures are noisier and slower than on an idle machine; "
                   "alternating rounds and keeping each side's best round limits, but does not remove, the effect.")
    if most >= m["cores"]:
        out.append(f"With {most} threads on {m['cores']} cores, a parallel section stalls whenever another process holds one "
                   "of the cores; PyTorch's OpenMP threads meet at a barrier after every operator, which makes it especially "
                   "sensitive to this. " + ("On this run the multi-thread tables therefore mostly "
                   "measure tolerance of a shared machine, not kernel speed: compare the 1-thread tables for that."
                   if busy else ""))
    return "\n".join(f"> {c}\n>" for c in out).rstrip(">\n") + "\n" if out else ""


def groups(rs):
    g = defaultdict(list)
    for r in rs:
        g[(r["threads"], r["batch"], r["tile"], r["fixture"], r["impl"])].append(r)
    return g


def sections(rs):
    """(threads, batch, tile) in run order, fixtures in run order."""
    keys, fixtures = [], []
    for r in rs:
        k = (r["threads"], r["batch"], r["tile"])
        if k not in keys:
            keys.append(k)
        if r["fixture"] not in fixtures:
            fixtures.append(r["fixture"])
    return sorted(keys, key=lambda k: (k[0], k[2])), fixtures


def heading(threads, batch, tile, samples):
    data = "the fixture's 64 samples" if tile == 1 else f"the 64 samples repeated {tile}× ({samples} samples)"
    return f"### {threads} thread{'s' if threads > 1 else ''}: {data}, batch {batch}"


def cell(r, key):
    return r.get(key) if r and r.get("status") == "ok" else None


def status(r):
    return r.get("status", "?") if r else "not run"


def gradients(rs):
    g = groups(rs)
    keys, fixtures = sections(rs)
    lines = []
    for threads, batch, tile in keys:
        samples = next((r["samples"] for r in rs if (r["threads"], r["batch"], r["tile"]) == (threads, batch, tile)), "?")
        lines += ["", heading(threads, batch, tile, samples), "",
                  "| fixture | params | ours ms / gradient | PyTorch ms / gradient | ours samples/s | PyTorch samples/s "
                  "| ours / PyTorch throughput | loss ours − PyTorch | grad rel. error ours / PyTorch |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for fx in fixtures:
            o = g.get((threads, batch, tile, fx, "onnxunlearn"))
            t = g.get((threads, batch, tile, fx, "pytorch"))
            o = best(o, "ms") if o else None
            t = best(t, "ms") if t else None
            params = cell(o, "params") or cell(t, "params")
            if cell(o, "ms") is None:
                lines.append(f"| {fx} | {params or '—'} | {status(o)} | {f(cell(t, 'ms'))} | — | {f(cell(t, 'samples_per_s'))} | — | — | — |")
                continue
            dl = o["loss"] - t["loss"] if cell(t, "loss") is not None else None
            lines.append(
                f"| {fx} | {params} | {f(o['ms'])} | {f(cell(t, 'ms'))} | {f(o['samples_per_s'])} | {f(cell(t, 'samples_per_s'))} "
                f"| {ratio(o['samples_per_s'], cell(t, 'samples_per_s'))} | {'—' if dl is None else f'{dl:.1e}'} "
                f"| {o['grad_rel_err']:.1e} / {'—' if cell(t, 'grad_rel_err') is None else format(t['grad_rel_err'], '.1e')} |")
    return lines


def hvps(rs):
    g = groups(rs)
    keys, fixtures = sections(rs)
    probes = next((r["probes"] for r in rs if "probes" in r), meta["probes"])
    lines = []
    for threads, batch, tile in keys:
        samples = next((r["samples"] for r in rs if (r["threads"], r["batch"], r["tile"]) == (threads, batch, tile)), "?")
        lines += ["", heading(threads, batch, tile, samples), "",
                  f"| fixture | params | ours ms / HVP | PyTorch ms / HVP | ours HVP/s | PyTorch HVP/s | ours / PyTorch throughput "
                  f"| ours Hutchinson ms ({probes} probes) | PyTorch Hutchinson ms | ours / PyTorch throughput "
                  "| diag rel. error ours / PyTorch |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for fx in fixtures:
            og = g.get((threads, batch, tile, fx, "onnxunlearn"))
            tg = g.get((threads, batch, tile, fx, "pytorch"))
            o = best(og, "hvp_ms") if og else None
            t = best(tg, "hvp_ms") if tg else None
            oh = best(og, "hutchinson_ms") if og else None
            th = best(tg, "hutchinson_ms") if tg else None
            params = cell(o, "params") or cell(t, "params")
            if cell(o, "hvp_ms") is None:
                lines.append(f"| {fx} | {params or '—'} | {status(o)} | {f(cell(t, 'hvp_ms'))} | — | {f(cell(t, 'hvp_per_s'))} | — "
                             f"| {status(o)} | {f(cell(th, 'hutchinson_ms'))} | — | — |")
                continue
            tms = cell(th, "hutchinson_ms")
            lines.append(
                f"| {fx} | {params} | {f(o['hvp_ms'])} | {f(cell(t, 'hvp_ms'))} | {f(o['hvp_per_s'])} | {f(cell(t, 'hvp_per_s'))} "
                f"| {ratio(o['hvp_per_s'], cell(t, 'hvp_per_s'))} | {f(oh['hutchinson_ms'])} | {f(tms)} "
                f"| {ratio(tms, oh['hutchinson_ms'])} "
                f"| {o['hdiag_rel_err']:.2f} / {'—' if cell(t, 'hdiag_rel_err') is None else format(t['hdiag_rel_err'], '.2f')} |")
    return lines


COMMON = """\
Both sides compute the same thing on the same fixture (`testdata/<name>/model.onnx`, `data.npz`), float32, eval mode
(the cnn's BatchNorm uses its running statistics), the same batch size and the same number of threads (ONNX Runtime
`IntraOpNumThreads` = `torch.set_num_threads`, plus `OMP_NUM_THREADS`/`OPENBLAS_NUM_THREADS` for torch). PyTorch
rebuilds the `nn.Module`s of `testdata/generate.py` and loads the ONNX initializers. "Repeated K×" tiles the 64 samples
K times along axis 0 (the mean loss, its gradient and Hessian do not change) to measure throughput beyond the per-call
overhead. Ratios are ours / PyTorch throughput: above 1 means OnnxUnlearn is faster. "no rule yet" means
`Evaluator.Open` refused the model (an op without a gradient rule); that row shows PyTorch only.

Reproduce with `benchmarks/run.sh` (raw results: the `.json` next to this file)."""


def write(name, title, intro, lines, rs):
    with open(os.path.join(out, name + ".md"), "w") as fh:
        fh.write(f"# {title}\n\n{intro}\n\n{COMMON}\n\n## Machine\n\n{machine(meta)}\n\n{caveats(meta)}\n## Results\n")
        fh.write("\n".join(lines) + "\n")
    with open(os.path.join(out, name + ".json"), "w") as fh:
        json.dump({"meta": meta, "results": rs}, fh, indent=1)
        fh.write("\n")


g = rows("grad")
if g:
    write("gradients", "Gradient evaluation: OnnxUnlearn vs PyTorch",
          "Time for one mean cross-entropy gradient over all samples (`Evaluator.Gradient` against a loop of "
          "`torch.autograd.grad` over the same batches, gradients weighted by batch size). The last column checks both "
          "against the float64 PyTorch reference gradient in `reference.npz`.",
          gradients(g), g)
h = rows("hvp")
if h:
    write("hvp", "Hessian-vector products and Hutchinson: OnnxUnlearn vs PyTorch",
          "Ours: `Hvp.Apply`, a central finite difference of two full-data gradients (θ ± εv), and "
          "`Diagonal.Hutchinson` with Rademacher probes (one HVP each, plus its bookkeeping: running variance, top-k "
          "stability). PyTorch: the exact HVP by double backward (`torch.autograd.grad(..., create_graph=True)`, then "
          "the gradient of g·v), batch by batch, and the same Hutchinson loop with the same probe count. The last "
          "column is the Hutchinson estimate's relative L2 error against the exact diagonal in `reference.npz` (with "
          "few probes it is dominated by the estimator's variance, not by the HVP).",
          hvps(h), h)
