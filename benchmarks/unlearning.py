#!/usr/bin/python3
"""The unlearning experiments of docs/benchmarks/unlearning.md: runs the onnx-unlearn CLI on the models and data of
testdata/experiments/ and writes the tables. Needs only numpy (no torch, no onnxruntime); the models, data and the
retraining times come from testdata/experiments/generate.py (committed outputs).

    benchmarks/unlearning.sh [mlp|cnn ...]          # builds the tool, then runs this for each architecture

Per architecture it writes docs/benchmarks/unlearning-<arch>.json (every run, raw) and
docs/benchmarks/unlearning-<arch>.md (the tables). Runs are single-threaded (--threads 1) and seeded; the selections
that depend on the seed (hessian: the Hutchinson probes; random) are run with seeds 0, 1, 2 and averaged.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXP = os.path.join(ROOT, "testdata", "experiments")
TOOL = os.path.join(ROOT, "tool", "bin", "Release", "net10.0", "onnx-unlearn")

SCENARIOS = ["flip01", "flip05", "flip20", "backdoor"]
SELECTIONS = [("hessian", []), ("hessian-smallest", ["--order", "smallest"]), ("hessian-hutchinson", ["--estimator", "hutchinson"]),
              ("hessian-exact", []), ("all", []), ("last-layer", []),
              ("random", []), ("gradient", []), ("fisher", []), ("magnitude", [])]
SEEDED = {"hessian", "hessian-smallest", "hessian-hutchinson", "random"}
# top-k of the tool's exact diagonal (sharpness --exact: one finite-difference HVP per element), given to unlearn as a
# mask; its cost (the sharpness run) is added to the row's gradient evaluations and seconds
EXACT = "hessian-exact"
UPDATES = ["first-order", "second-order"]


def sh(cmd, ok=(0,)):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode not in ok:
        raise SystemExit(f"{' '.join(cmd)}\nexit {r.returncode}: {r.stderr.strip()}")
    return r


def predict(model, data, tmp):
    out = os.path.join(tmp, "pred.npz")
    sh([TOOL, "predict", model, "--data", data, "--out", out, "--threads", "1"])
    with np.load(out) as p:
        return p["pred"]


def labels(path):
    with np.load(path) as d:
        return d["label"]


class Scenario:
    def __init__(self, arch, name, tmp):
        self.arch, self.name = arch, name
        self.dir = os.path.join(EXP, arch, name)
        self.files = {k: os.path.join(self.dir, k + ".npz") for k in ("train", "forget", "corrected")}
        self.files["test"] = os.path.join(EXP, arch, "test.npz")
        self.files["triggered"] = os.path.join(EXP, arch, "triggered_test.npz")
        self.y = {k: labels(v) for k, v in self.files.items()}
        self.tmp = tmp
        self.ref = {k: self.measure(os.path.join(self.dir, k + ".onnx")) for k in ("poisoned", "retrained")}

    def measure(self, model):
        """Predictions of a model on every set, and the metrics that follow from them."""
        p = {k: predict(model, self.files[k], self.tmp) for k in ("forget", "corrected", "test", "triggered")}
        m = {"forget_poisoned_label": float((p["forget"] == self.y["forget"]).mean()),
             "corrected_accuracy": float((p["corrected"] == self.y["corrected"]).mean()),
             "test_accuracy": float((p["test"] == self.y["test"]).mean())}
        if self.name == "backdoor":
            target = int(self.y["forget"][0])
            nt = self.y["triggered"] != target
            m["attack_success_rate"] = float((p["triggered"][nt] == target).mean())
        return m, p["test"]

    def exact_mask(self, fraction):
        """Top-k of the tool's exact (finite-difference) Hessian diagonal as a mask file, and what computing it cost."""
        if not hasattr(self, "_exact"):
            scores = os.path.join(self.tmp, "exact.npz")
            r = sh([TOOL, "sharpness", os.path.join(self.dir, "poisoned.onnx"), "--data", self.files["train"], "--exact",
                    "--force", "--threads", "1", "--out", scores, "--json"])
            doc = json.loads(r.stdout)
            self._exact = (scores, doc["gradientEvaluations"], doc["seconds"])
        scores, evals, secs = self._exact
        mask = os.path.join(self.tmp, f"mask-{fraction}.npz")
        sh([TOOL, "select", "--scores", scores, "--fraction", str(fraction), "--out", mask])
        return mask, evals, secs

    def run(self, selection, extra, update, seed, damping, fraction):
        out = os.path.join(self.tmp, "new.onnx")
        rep = os.path.join(self.tmp, "report.json")
        for f in (out, rep):
            if os.path.exists(f):
                os.remove(f)
        cost = (0, 0.0)
        if selection == EXACT:
            mask, *cost = self.exact_mask(fraction)
            how = ["--mask", mask]
        else:
            how = ["--select", selection.split("-")[0] if selection.startswith("hessian") else selection, *extra, "--fraction", str(fraction)]
        cmd = [TOOL, "unlearn", os.path.join(self.dir, "poisoned.onnx"), "--train", self.files["train"],
               "--forget", self.files["forget"], "--corrected", self.files["corrected"], "--test", self.files["test"],
               *how, "--update", update, "--damping", str(damping), "--seed", str(seed), "--threads", "1", "--steps", "1",
               "--out", out, "--report", rep]
        t0 = time.perf_counter()
        sh(cmd, ok=(0, 3))
        wall = time.perf_counter() - t0
        r = json.load(open(rep))
        r["gradientEvaluations"] += cost[0]
        r["seconds"] += cost[1]
        applied = r.get("outputModel") is not None
        m, pred = self.measure(out) if applied else self.ref["poisoned"]
        m = dict(m)
        m["agreement_with_retrained"] = float((pred == self.ref["retrained"][1]).mean())
        # the CLI's own measurements of the same sets must agree with the predictions (a check of both)
        if applied:
            assert abs(r["after"]["corrected"]["accuracy"] - m["corrected_accuracy"]) < 1e-9, (r["after"], m)
            assert abs(r["after"]["forget"]["accuracy"] - m["forget_poisoned_label"]) < 1e-9, (r["after"], m)
        return {"arch": self.arch, "scenario": self.name, "selection": selection, "update": update, "seed": seed,
                "damping": damping, "fraction": fraction, "applied": applied, "outcome": r["outcome"],
                "selected": r["selectedElements"], "trainable": r["trainableElements"],
                "gradient_evaluations": r["gradientEvaluations"], "seconds": r["seconds"], "wall_seconds": wall,
                "tau": r.get("tau"), "cg": r.get("cg"), "update_norm": r["updateNorm"],
                "delta_g_norm": r["gradientDifferenceNorm"], **m}


def restored(after, poisoned, retrained):
    d = retrained - poisoned
    return (after - poisoned) / d if abs(d) > 1e-12 else float("nan")


def fmt(x, pct=False, digits=2):
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "–"
    return f"{100 * x:.1f}" if pct else f"{x:.{digits}f}"


def aggregate(rows):
    """Mean over seeds; '±' the standard deviation where the seed matters."""
    keys = ["corrected_accuracy", "forget_poisoned_label", "test_accuracy", "agreement_with_retrained",
            "attack_success_rate", "gradient_evaluations", "seconds", "wall_seconds", "selected", "restored_test",
            "restored_corrected"]
    out = {}
    for k in keys:
        v = [r[k] for r in rows if k in r]
        if v:
            out[k] = float(np.mean(v))
            out[k + "_sd"] = float(np.std(v)) if len(v) > 1 else None
    out["applied"] = sum(r["applied"] for r in rows)
    out["runs"] = len(rows)
    out["cg"] = [r["cg"] for r in rows if r.get("cg")]
    return out


def pm(a, k, pct=True):
    s = fmt(a.get(k), pct)
    if a.get(k + "_sd") is not None and a[k + "_sd"] > 0:
        s += f" ± {fmt(a[k + '_sd'], pct)}"
    return s


def summary(arch, rows, meta):
    """One line per selection × update: the headline metrics of every scenario (means over seeds)."""
    flips = [sc for sc in SCENARIOS if sc != "backdoor" and any(r["scenario"] == sc for r in rows)]
    head = ["| selection | update | " + " | ".join(f"{sc}: Z̃ acc / test acc / agree" for sc in flips) + " | backdoor: ASR / test acc |",
            "|---|---|" + "---|" * (len(flips) + 1)]
    refs = rows[0]["_ref_all"]
    for name in ("poisoned", "retrained"):
        cells = [f"{fmt(refs[sc][name]['corrected_accuracy'], True)} / {fmt(refs[sc][name]['test_accuracy'], True)} / "
                 f"{fmt(refs[sc]['agreement_poisoned_retrained'] if name == 'poisoned' else 1.0, True)}" for sc in flips]
        bd = refs.get("backdoor", {}).get(name)
        cells.append(f"{fmt(bd['attack_success_rate'], True)} / {fmt(bd['test_accuracy'], True)}" if bd else "")
        head.append(f"| *{name} model* | | " + " | ".join(cells) + " |")
    for upd in UPDATES:
        for sel, _ in SELECTIONS:
            cells = []
            for sc in flips + ["backdoor"]:
                g = [r for r in rows if r["scenario"] == sc and r["selection"] == sel and r["update"] == upd]
                if not g:
                    cells.append("")
                    continue
                a = aggregate(g)
                star = "*" if a["applied"] < a["runs"] else ""
                if sc == "backdoor":
                    cells.append(f"{fmt(a['attack_success_rate'], True)} / {fmt(a['test_accuracy'], True)}{star}")
                else:
                    cells.append(f"{fmt(a['corrected_accuracy'], True)} / {fmt(a['test_accuracy'], True)} / {fmt(a['agreement_with_retrained'], True)}{star}")
            head.append(f"| {sel} | {upd} | " + " | ".join(cells) + " |")
    return "\n".join(head)


def tables(arch, rows, meta, damping, fraction):
    lines = [f"# Unlearning benchmark tables: {arch}", "",
             f"Generated by `benchmarks/unlearning.sh {arch}` (do not edit). k = {100 * fraction:g} % of the trainable "
             f"elements for hessian / random / gradient / fisher / magnitude; second order with λ = {damping:g} "
             f"(CG: tolerance 1e-3, at most 50 iterations). hessian = top-k of the Diag++ estimate of diag(H) from 60 HVPs "
             f"(the default of `unlearn --select hessian`), hessian-smallest = the bottom-k of the same estimate, "
             f"hessian-hutchinson = top-k of Hutchinson's estimate from 60 HVPs, hessian-exact = top-k of `sharpness --exact` "
             f"(one HVP per element; its cost is included). Seeded selections (hessian, hessian-smallest, hessian-hutchinson, "
             f"random): mean ± sd over seeds 0, 1, 2. Z = the forget set as trained, Z̃ = the corrected set. Percentages. \"restored\" = (after − poisoned) / (retrained − poisoned). "
             f"\"grad evals\" = gradient-graph runs of ≤ 256 samples (the training set is {meta['train_samples']} samples = "
             f"5 runs); \"s\" = the report's compute seconds (single thread).", "",
             "## Summary", "", "Z̃ accuracy / test accuracy / agreement with the retrained model's test predictions (%); "
             "backdoor: attack success rate / test accuracy. * = some CG runs stopped without an update.", "",
             summary(arch, rows, meta), ""]
    for sc in SCENARIOS:
        mm = meta["models"][f"{arch}/{sc}"]
        P, R = mm["poisoned"], mm["retrained"]
        rs = [r for r in rows if r["scenario"] == sc]
        if not rs:
            continue
        ref = rs[0]["_ref"]
        lines += [f"## {arch} / {sc}: {mm['poisoned_samples']} poisoned samples", ""]
        if sc == "backdoor":
            lines += ["| selection | update | updated | elements | ASR | Z as target | Z̃ acc | test acc | restored test | agree w/ retrained | grad evals | s |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        else:
            lines += ["| selection | update | updated | elements | Z̃ acc | restored Z̃ | Z still poisoned | test acc | restored test | agree w/ retrained | grad evals | s |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, (m, _) in (("poisoned", ref["poisoned"]), ("retrained", ref["retrained"])):
            agree = ref["agree_poisoned"] if name == "poisoned" else 1.0
            t = P if name == "poisoned" else R
            cost = f"retraining: {R['train_seconds']:.1f} s" if name == "retrained" else ""
            if sc == "backdoor":
                lines.append(f"| *{name} model* | | | | {fmt(m['attack_success_rate'], True)} | {fmt(m['forget_poisoned_label'], True)} | "
                             f"{fmt(m['corrected_accuracy'], True)} | {fmt(m['test_accuracy'], True)} | | {fmt(agree, True)} | | {cost} |")
            else:
                lines.append(f"| *{name} model* | | | | {fmt(m['corrected_accuracy'], True)} | | {fmt(m['forget_poisoned_label'], True)} | "
                             f"{fmt(m['test_accuracy'], True)} | | {fmt(agree, True)} | | {cost} |")
        for upd in UPDATES:
            for sel, _ in SELECTIONS:
                g = [r for r in rs if r["selection"] == sel and r["update"] == upd]
                if not g:
                    continue
                a = aggregate(g)
                upd_s = f"{a['applied']}/{a['runs']}"
                common = f"{pm(a, 'test_accuracy')} | {pm(a, 'restored_test')} | {pm(a, 'agreement_with_retrained')} | {a['gradient_evaluations']:.0f} | {a['seconds']:.2f}"
                if sc == "backdoor":
                    lines.append(f"| {sel} | {upd} | {upd_s} | {a['selected']:.0f} | {pm(a, 'attack_success_rate')} | {pm(a, 'forget_poisoned_label')} | "
                                 f"{pm(a, 'corrected_accuracy')} | {common} |")
                else:
                    lines.append(f"| {sel} | {upd} | {upd_s} | {a['selected']:.0f} | {pm(a, 'corrected_accuracy')} | {pm(a, 'restored_corrected')} | "
                                 f"{pm(a, 'forget_poisoned_label')} | {common} |")
        fails = sorted({c["stop"] for r in rs for c in [r.get("cg")] if c and not r["applied"]})
        if fails:
            lines += ["", "CG stops that left the model unchanged (counted in the table with the poisoned model's metrics): "
                      + "; ".join(f"`{f}`" for f in fails)]
        lines.append("")
    return "\n".join(lines)


SWEEP_FRACTIONS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5]
SWEEP_SELECTIONS = ["hessian", "hessian-smallest", "hessian-exact", "random", "gradient", "fisher", "magnitude"]


def sweep_tables(arch, sc, rows, ref):
    lines = [f"## Fraction sweep: {arch} / {sc}", "",
             "Share k of the trainable elements updated; each cell: Z̃ accuracy / test accuracy (%), mean over seeds 0-2 for "
             f"the seeded selections. Poisoned model: {fmt(ref['poisoned'][0]['corrected_accuracy'], True)} / "
             f"{fmt(ref['poisoned'][0]['test_accuracy'], True)}; retrained: {fmt(ref['retrained'][0]['corrected_accuracy'], True)} / "
             f"{fmt(ref['retrained'][0]['test_accuracy'], True)}. A cell marked * had CG runs that stopped without an update.", ""]
    lines.append("| selection | update | " + " | ".join(f"k = {100 * f:g} %" for f in SWEEP_FRACTIONS) + " |")
    lines.append("|---|---|" + "---|" * len(SWEEP_FRACTIONS))
    for upd in UPDATES:
        for sel in SWEEP_SELECTIONS:
            cells = []
            for fr in SWEEP_FRACTIONS:
                g = [r for r in rows if r["selection"] == sel and r["update"] == upd and r["fraction"] == fr]
                if not g:
                    cells.append("")
                    continue
                a = aggregate(g)
                star = "*" if a["applied"] < a["runs"] else ""
                cells.append(f"{fmt(a['corrected_accuracy'], True)} / {fmt(a['test_accuracy'], True)}{star}")
            lines.append(f"| {sel} | {upd} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


TAUS = [None, 10.0, 100.0, 1000.0]
TAU_SELECTIONS = ["hessian", "all", "last-layer", "gradient"]


def tau_sweep(archs, scenario="backdoor"):
    """First-order steps larger than the Cauchy step on the backdoor, where Δg is small (Z and Z̃ are both fit)."""
    lines = [f"# First-order step size on the {scenario} scenario", "",
             f"Generated by `benchmarks/unlearning.sh --tau-sweep {' '.join(archs)}` (do not edit). First order, k = 5 %, seed 0; "
             "τ = Cauchy is the default step ‖Δg_S‖² / Δg_Sᵀ H_SS Δg_S. Each cell: attack success rate / test accuracy (%).", ""]
    rows = []
    for arch in archs:
        with tempfile.TemporaryDirectory(prefix="unlearning-tau-") as tmp:
            S = Scenario(arch, scenario, tmp)
            P = S.ref["poisoned"][0]
            lines += [f"## {arch}: poisoned model {fmt(P['attack_success_rate'], True)} / {fmt(P['test_accuracy'], True)}, "
                      f"retrained {fmt(S.ref['retrained'][0]['attack_success_rate'], True)} / {fmt(S.ref['retrained'][0]['test_accuracy'], True)}", "",
                      "| selection | ‖Δg‖ | " + " | ".join("τ = Cauchy" if t is None else f"τ = {t:g}" for t in TAUS) + " |",
                      "|---|---|" + "---|" * len(TAUS)]
            for sel in TAU_SELECTIONS:
                cells, dg = [], None
                for tau in TAUS:
                    extra = [] if tau is None else ["--tau", str(tau)]
                    r = S.run(sel, extra, "first-order", 0, 0.01, 0.05)
                    rows.append(r)
                    cells.append(f"{fmt(r['attack_success_rate'], True)} / {fmt(r['test_accuracy'], True)}"
                                 + (f" (τ = {r['tau']:.3g})" if tau is None else ""))
                    print(f"tau {arch} {sel} {tau}: ASR {r['attack_success_rate']:.3f} test {r['test_accuracy']:.3f}", flush=True)
                lines.append(f"| {sel} | {r['delta_g_norm']:.3g} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines), rows


def write_tables(arch, runs, refs, sweep, sweep_scenario, meta, damping, fraction, out):
    def ref_of(sc):
        r = refs[sc]
        return {"poisoned": (r["poisoned"], None), "retrained": (r["retrained"], None), "agree_poisoned": r["agreement_poisoned_retrained"]}
    rows = [dict(r, _ref=ref_of(r["scenario"]), _ref_all=refs) for r in runs]
    with open(os.path.join(out, f"unlearning-{arch}.md"), "w") as f:
        f.write(tables(arch, rows, meta, damping, fraction) + "\n")
        if sweep:
            f.write(sweep_tables(arch, sweep_scenario, sweep, ref_of(sweep_scenario)))


DAMPINGS = [0.001, 0.01, 0.1, 1.0]
DAMPING_SELECTIONS = ["hessian", "all", "last-layer", "random", "gradient", "fisher"]


def damping_sweep(archs, scenario="flip20"):
    """Second order on the largest label flip with damping λ from 1e-3 to 1 (seed 0)."""
    lines = [f"# Second-order damping on {scenario}", "",
             f"Generated by `benchmarks/unlearning.sh --damping-sweep {' '.join(archs)}` (do not edit). Second order, k = 5 %, "
             "seed 0, CG tolerance 1e-3, at most 50 iterations. Each cell: Z̃ accuracy / test accuracy (%); "
             "'no update' = CG stopped on negative curvature or divergence and the model was left as it was.", ""]
    rows = []
    for arch in archs:
        with tempfile.TemporaryDirectory(prefix="unlearning-damping-") as tmp:
            S = Scenario(arch, scenario, tmp)
            P, R = S.ref["poisoned"][0], S.ref["retrained"][0]
            lines += [f"## {arch}: poisoned model {fmt(P['corrected_accuracy'], True)} / {fmt(P['test_accuracy'], True)}, "
                      f"retrained {fmt(R['corrected_accuracy'], True)} / {fmt(R['test_accuracy'], True)}", "",
                      "| selection | " + " | ".join(f"λ = {d:g}" for d in DAMPINGS) + " |", "|---|" + "---|" * len(DAMPINGS)]
            for sel in DAMPING_SELECTIONS:
                cells = []
                for d in DAMPINGS:
                    r = S.run(sel, [], "second-order", 0, d, 0.05)
                    rows.append(r)
                    cells.append(f"{fmt(r['corrected_accuracy'], True)} / {fmt(r['test_accuracy'], True)}" if r["applied"] else "no update")
                    print(f"damping {arch} {sel} {d}: {r['outcome'][:30]} Z̃ {r['corrected_accuracy']:.3f} test {r['test_accuracy']:.3f}", flush=True)
                lines.append(f"| {sel} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines), rows


def overlap(archs, scenarios=("flip05", "flip20"), fraction=0.05):
    """How the sharp top-k relates to |Δg|: Jaccard with the |Δg| top-k, share of ‖Δg‖² each captures, tensors."""
    lines = ["# Sharp parameters vs large |Δg|", "",
             f"Generated by `benchmarks/unlearning.sh --overlap {' '.join(archs)}` (do not edit). k = {100 * fraction:g} %; "
             "H = top-k of `sharpness` (Diag++, 60 HVPs, seed 0) on the training set; G = top-k of |Δg| (Δg from `grad` on "
             "Z̃ and Z). \"‖Δg‖² captured\" = Σ_S Δg_i² / ‖Δg‖² (G is the largest any k elements can capture).", "",
             "| model | Jaccard(H, G) | ‖Δg‖² captured by H | by G | H per tensor | G per tensor |", "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="unlearning-overlap-") as tmp:
        for arch in archs:
            for sc in scenarios:
                d = os.path.join(EXP, arch, sc)
                model = os.path.join(d, "poisoned.onnx")
                sh([TOOL, "sharpness", model, "--data", os.path.join(d, "train.npz"), "--probes", "60", "--seed", "0",
                    "--out", f"{tmp}/s.npz", "--threads", "1", "--json"])
                g = {}
                for k in ("forget", "corrected"):
                    sh([TOOL, "grad", model, "--data", os.path.join(d, k + ".npz"), "--out", f"{tmp}/g-{k}.npz", "--threads", "1"])
                    with np.load(f"{tmp}/g-{k}.npz") as z:
                        g[k] = {n: z[n] for n in z.files}
                with np.load(f"{tmp}/s.npz") as z:
                    names = [n for n in z.files if not n.startswith("stderr/")]
                    h = np.concatenate([z[n].ravel() for n in names])
                    sizes = [z[n].size for n in names]
                # n·Δg up to the factor 1/n, which changes neither ranking nor shares
                dg = np.concatenate([(g["corrected"][n] * len(labels(os.path.join(d, "corrected.npz")))
                                      - g["forget"][n] * len(labels(os.path.join(d, "forget.npz")))).ravel() for n in names])
                k = max(1, int(round(fraction * h.size)))
                H, G = set(np.argsort(-h, kind="stable")[:k].tolist()), set(np.argsort(-np.abs(dg), kind="stable")[:k].tolist())
                off = np.cumsum([0] + sizes)
                per = lambda S: ", ".join(f"{n} {c}" for n, c in ((n, sum(off[i] <= j < off[i + 1] for j in S)) for i, n in enumerate(names)) if c)
                cap = lambda S: float(np.sum(dg[sorted(S)] ** 2) / np.sum(dg ** 2))
                lines.append(f"| {arch} / {sc} | {len(H & G) / len(H | G):.2f} | {100 * cap(H):.0f} % | {100 * cap(G):.0f} % | {per(H)} | {per(G)} |")
                print(lines[-1], flush=True)
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("archs", nargs="*", default=["mlp"])
    ap.add_argument("--scenarios", nargs="*", default=SCENARIOS)
    ap.add_argument("--damping", type=float, default=0.01)
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--tables-only", action="store_true", help="rebuild the .md tables from the .json of a previous run")
    ap.add_argument("--damping-sweep", action="store_true", help="only the second-order damping table of flip20")
    ap.add_argument("--overlap", action="store_true", help="only the sharp-vs-|Δg| overlap table")
    ap.add_argument("--tau-sweep", action="store_true", help="only the first-order step-size table of the backdoor")
    ap.add_argument("--sweep", default="flip20", help="scenario of the fraction sweep ('' for none)")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks"))
    a = ap.parse_args()
    meta = json.load(open(os.path.join(EXP, "meta.json")))
    os.makedirs(a.out, exist_ok=True)
    if a.overlap:
        with open(os.path.join(a.out, "unlearning-overlap.md"), "w") as f:
            f.write(overlap(a.archs))
        return
    def write_study(name, text_rows):
        text, rows = text_rows
        with open(os.path.join(a.out, name + ".md"), "w") as f:
            f.write(text + "\n")
        with open(os.path.join(a.out, name + ".json"), "w") as f:
            json.dump(rows, f, indent=1)
            f.write("\n")

    if a.damping_sweep:
        write_study("unlearning-damping", damping_sweep(a.archs))
        return
    if a.tau_sweep:
        write_study("unlearning-backdoor-tau", tau_sweep(a.archs))
        return
    if a.tables_only:
        for arch in a.archs:
            doc = json.load(open(os.path.join(a.out, f"unlearning-{arch}.json")))
            write_tables(arch, doc["runs"], doc["references"], doc.get("sweep", []), a.sweep, meta, doc["damping"], doc["fraction"], a.out)
        return
    for arch in a.archs:
        rows = []
        with tempfile.TemporaryDirectory(prefix="unlearning-bench-") as tmp:
            for sc in a.scenarios:
                S = Scenario(arch, sc, tmp)
                ref = {"poisoned": S.ref["poisoned"], "retrained": S.ref["retrained"],
                       "agree_poisoned": float((S.ref["poisoned"][1] == S.ref["retrained"][1]).mean())}
                # the CLI's predictions must reproduce PyTorch's accuracies recorded at generation time
                mm = meta["models"][f"{arch}/{sc}"]
                for k in ("poisoned", "retrained"):
                    assert abs(S.ref[k][0]["test_accuracy"] - mm[k]["test_accuracy"]) < 1e-9, (arch, sc, k)
                P, R = S.ref["poisoned"][0], S.ref["retrained"][0]
                for upd in UPDATES:
                    for sel, extra in SELECTIONS:
                        for seed in range(a.seeds if sel in SEEDED else 1):
                            r = S.run(sel, extra, upd, seed, a.damping, a.fraction)
                            r["restored_test"] = restored(r["test_accuracy"], P["test_accuracy"], R["test_accuracy"])
                            r["restored_corrected"] = restored(r["corrected_accuracy"], P["corrected_accuracy"], R["corrected_accuracy"])
                            rows.append(r)
                            print(f"{arch} {sc} {sel} {upd} seed {seed}: {r['outcome'][:40]}; Z̃ {r['corrected_accuracy']:.3f} "
                                  f"test {r['test_accuracy']:.3f} agree {r['agreement_with_retrained']:.3f}"
                                  + (f" ASR {r['attack_success_rate']:.3f}" if 'attack_success_rate' in r else "")
                                  + f" ({r['gradient_evaluations']} evals, {r['seconds']:.2f} s)", flush=True)
                for r in rows:
                    if r["scenario"] == sc:
                        r["_ref"] = ref
            sweep = []
            if a.sweep:
                S = Scenario(arch, a.sweep, tmp)
                for upd in UPDATES:
                    for sel in SWEEP_SELECTIONS:
                        extra = dict(SELECTIONS)[sel]
                        for fr in SWEEP_FRACTIONS:
                            for seed in range(a.seeds if sel in SEEDED else 1):
                                r = S.run(sel, extra, upd, seed, a.damping, fr)
                                sweep.append(r)
                                print(f"sweep {arch} {a.sweep} {sel} {upd} k={fr} seed {seed}: Z̃ {r['corrected_accuracy']:.3f} "
                                      f"test {r['test_accuracy']:.3f}", flush=True)
        refs = {sc: {"poisoned": r0["_ref"]["poisoned"][0], "retrained": r0["_ref"]["retrained"][0],
                     "agreement_poisoned_retrained": r0["_ref"]["agree_poisoned"]}
                for sc in a.scenarios for r0 in [next(r for r in rows if r["scenario"] == sc)]}
        runs = [{k: v for k, v in r.items() if k != "_ref"} for r in rows]
        with open(os.path.join(a.out, f"unlearning-{arch}.json"), "w") as f:
            json.dump({"damping": a.damping, "fraction": a.fraction, "seeds": a.seeds, "runs": runs, "sweep": sweep,
                       "references": refs}, f, indent=1)
            f.write("\n")
        write_tables(arch, runs, refs, sweep, a.sweep, meta, a.damping, a.fraction, a.out)
        print(f"wrote {a.out}/unlearning-{arch}.md and .json")


if __name__ == "__main__":
    main()
