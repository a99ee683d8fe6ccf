#!/usr/bin/python3
"""The canary experiment (docs/benchmarks/canary.md): every selection x update x F on a language model that memorised a
credit-card number, measured by the secret's exposure and held-out perplexity. Called by benchmarks/canary.sh.

Usage: benchmarks/canary.py [lstm] [transformer]   (needs the CLI built in Release; python without numpy is enough)
       benchmarks/canary.py --markdown lstm          (rewrite the table from the JSON)
       benchmarks/canary.py --redo lstm hessian:second-order   (rerun those rows only)
       benchmarks/canary.py --fractions 0.05 transformer       (F = 5 % only; an interrupted run resumes from its partial file)
Writes docs/benchmarks/canary-<arch>.json and .md.
"""
import json
import math
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "testdata", "experiments", "canary")
CLI = ["dotnet", os.environ.get("ONNX_UNLEARN_DLL", os.path.join(ROOT, "tool", "bin", "Release", "net10.0", "onnx-unlearn.dll"))]
SELECTIONS = ["hessian", "gradient", "fisher", "magnitude", "random", "last-layer", "all"]
FRACTIONS = [0.01, 0.05, 0.2]


def meta():
    return json.load(open(os.path.join(DATA, "meta.json")))


def secret_options(m):
    return ["--vocab", os.path.join(DATA, "vocab.json"), "--prefix", m["prefix"], "--secret", m["secret"]]


def exposure(model, m):
    out = subprocess.run(CLI + ["exposure", model, "--json", "--budget", "20000"] + secret_options(m), capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    r = json.loads(out.stdout)["result"]
    return {"bits": r["exposure"], "method": r["method"]}


def perplexity(model):
    out = subprocess.run(CLI + ["eval", model, "--data", os.path.join(DATA, "heldout.npz"), "--json"], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return math.exp(json.loads(out.stdout)["loss"])


def unlearn(model, m, extra):
    args = CLI + ["unlearn", model, "--train", os.path.join(DATA, "train.npz"), "--forget", os.path.join(DATA, "forget.npz"),
                  "--corrected", os.path.join(DATA, "corrected.npz"), "--test", os.path.join(DATA, "heldout.npz"),
                  "--train-size", str(m["train_windows"]), "--json"] + secret_options(m) + extra
    clock = time.time()
    out = subprocess.run(args, capture_output=True, text=True)
    wall = time.time() - clock
    if out.returncode not in (0, 3) or not out.stdout.strip():
        return {"args": extra, "error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    r = json.loads(out.stdout)
    row = {"args": extra, "outcome": r["outcome"], "selected": r["selectedElements"], "gradientEvaluations": r["gradientEvaluations"],
           "seconds": round(r["seconds"], 1), "wall": round(wall, 1), "steps": max(0, len(r.get("steps") or []) - 1),
           "exposureBefore": r["exposure"]["before"]["bits"]}
    if r.get("after"):
        row["exposure"] = r["exposure"]["after"]["bits"]
        row["exposureMethod"] = r["exposure"]["after"]["method"]
        row["perplexityRatio"] = math.exp(r["after"]["test"]["loss"] - r["before"]["test"]["loss"])
    return row


def run(arch, fractions=FRACTIONS):
    m = meta()
    model = os.path.join(DATA, arch, "canary.onnx")
    # rows already measured (an interrupted run) are kept in a partial file, keyed by their options
    partial_path = os.path.join(ROOT, "docs", "benchmarks", f"canary-{arch}.partial.json")
    done = json.load(open(partial_path)) if os.path.exists(partial_path) else {}

    def measured(extra):
        key = " ".join(extra)
        if key not in done:
            done[key] = unlearn(model, m, extra)
            with open(partial_path, "w") as f:
                json.dump(done, f, indent=1)
        return done[key]

    result = {"arch": arch, "meta": m, "canary": {**exposure(model, m), "perplexity": perplexity(model), "seconds": m[arch]["canary"]["train_seconds"]}}
    retrained = os.path.join(DATA, arch, "retrained.onnx")
    result["retrained"] = {**exposure(retrained, m), "perplexity": perplexity(retrained), "seconds": m[arch]["retrained"]["train_seconds"]}
    rows = [("defaults", None, None, measured([]))]
    print(arch, "defaults", rows[-1], flush=True)
    for sel in SELECTIONS:
        for update in ["first-order", "second-order"]:
            for f in ([None] if sel in ("last-layer", "all") else fractions):
                frac = [] if f is None else ["--fraction", str(f)]
                iterate = f in (None, 0.05)
                for steps in (["1", "auto"] if iterate else ["1"]):
                    extra = ["--select", sel, "--update", update, "--steps", steps] + frac
                    rows.append((sel, update, f, measured(extra)))
                    print(arch, sel, update, f, steps, rows[-1][3], flush=True)
    result["runs"] = [{"select": s, "update": u, "fraction": f, **r} for s, u, f, r in rows]
    os.makedirs(os.path.join(ROOT, "docs", "benchmarks"), exist_ok=True)
    with open(os.path.join(ROOT, "docs", "benchmarks", f"canary-{arch}.json"), "w") as f:
        json.dump(result, f, indent=1)
    os.remove(partial_path)
    write_markdown(result)


def gap_closed(r, canary, retrained):
    return (canary - r) / (canary - retrained) if canary != retrained else float("nan")


def write_markdown(res):
    arch, m, c, rt = res["arch"], res["meta"], res["canary"], res["retrained"]
    lines = [f"# Canary unlearning: {arch}", "",
             f"Generated by `benchmarks/canary.sh {arch}` from `testdata/experiments/canary/` (`canary.py`); raw figures in `canary-{arch}.json`.",
             f"Secret \"{m['secret']}\" after \"{m['prefix']}\", inserted {m['insertions']} times in {m['train_characters']:,} characters of training text; "
             f"Z = the {m['forget_windows']} training windows that contain it, Z̃ = the same windows with random digits; n = {m['train_windows']:,} windows; "
             f"`--train` = a sample of {m['train_sample']} windows (Hessian sample and retain sample are drawn from it).", "",
             "| model | exposure (bits) | held-out perplexity |", "|---|---|---|",
             f"| canary (memorised) | {c['bits']:.2f} ({c['method']}) | {c['perplexity']:.4f} |",
             f"| retrained without the canary | {rt['bits']:.2f} ({rt['method']}) | {rt['perplexity']:.4f} |", "",
             f"Training (PyTorch, {m[arch]['epochs']} epochs, {m[arch]['threads']} threads): {c.get('seconds', 0):.0f} s for the canary model, {rt['seconds']:.0f} s for "
             "the retrained one — the cost of retraining; both were measured while other work shared the machine's 2 cores.", "",
             "Gap closed = (exposure before − after) / (canary − retrained). Perplexity × = held-out perplexity after / before. "
             "Steps: `1` = the method's single update, `auto` = iterative (recomputed Δg, step-size search, 2 % retain budget). "
             "Time = the `unlearn` run's compute (gradient evaluations, selection, steps; exposure measurement excluded).", "",
             "| selection | update | F | steps | exposure after | gap closed | perplexity × | gradient evaluations | time (s) | outcome |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        steps = r["args"][r["args"].index("--steps") + 1] if "--steps" in r["args"] else "auto"
        f = "5 %" if r["select"] == "defaults" else "—" if r["fraction"] is None else f"{r['fraction']:.0%}".replace("%", " %")
        sel = "**defaults** (hessian, first order)" if r["select"] == "defaults" else r["select"]
        if "error" in r:
            lines.append(f"| {sel} | {r['update'] or 'first-order'} | {f} | {steps} | — | — | — | — | — | error: {r['error']} |")
        elif "exposure" not in r:
            lines.append(f"| {sel} | {r['update'] or 'first-order'} | {f} | {steps} | unchanged | 0 | 1 | {r['gradientEvaluations']} | {r['seconds']} | {r['outcome']} |")
        else:
            done = f"{r['steps']} steps" if steps == "auto" else "updated"
            lines.append(f"| {sel} | {r['update'] or 'first-order'} | {f} | {steps} | {r['exposure']:.2f} | {gap_closed(r['exposure'], c['bits'], rt['bits']):.0%} | "
                         f"{r['perplexityRatio']:.3f} | {r['gradientEvaluations']} | {r['seconds']} | {done} |")
    with open(os.path.join(ROOT, "docs", "benchmarks", f"canary-{arch}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def redo(arch, select, update):
    """Reruns the rows of one selection and update in an existing result (after a fix), keeping the others."""
    path = os.path.join(ROOT, "docs", "benchmarks", f"canary-{arch}.json")
    result = json.load(open(path))
    m, model = meta(), os.path.join(DATA, arch, "canary.onnx")
    for i, r in enumerate(result["runs"]):
        if r["select"] == select and r["update"] == update:
            result["runs"][i] = {"select": select, "update": update, "fraction": r["fraction"], **unlearn(model, m, r["args"])}
            print(arch, result["runs"][i], flush=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    write_markdown(result)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--markdown"]:
        for a in args[1:]:
            write_markdown(json.load(open(os.path.join(ROOT, "docs", "benchmarks", f"canary-{a}.json"))))
    elif args[:1] == ["--redo"]:
        select, update = args[2].split(":")
        redo(args[1], select, update)
    else:
        fractions = FRACTIONS
        if "--fractions" in args:  # a smaller grid, e.g. --fractions 0.05
            i = args.index("--fractions")
            fractions, args = [float(x) for x in args[i + 1].split(",")], args[:i] + args[i + 2:]
        for a in args or ["lstm"]:
            run(a, fractions)
