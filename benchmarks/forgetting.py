"""Runs the defaults on every task of testdata/experiments/ and tabulates restored share and held-out utility (see forgetting.sh)."""
import json, os, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXP = os.path.join(ROOT, "testdata", "experiments")
TOOL = ["dotnet", os.path.join(ROOT, "tool", "bin", "Release", "net10.0", "onnx-unlearn.dll")]
META = json.load(open(os.path.join(EXP, "meta.json")))
extra = sys.argv[1:]


def run(args):
    p = subprocess.run(TOOL + args, capture_output=True, text=True)
    if p.returncode not in (0, 3, 4):
        sys.exit(f"onnx-unlearn {' '.join(args)}: exit {p.returncode}: {p.stderr.strip()}")
    return json.loads(p.stdout)


rows = []
with tempfile.TemporaryDirectory() as tmp:
    for arch in ["cnn", "mlp"]:
        for task in ["flip01", "flip05", "flip20", "backdoor"]:
            d = os.path.join(EXP, arch, task)
            out = os.path.join(tmp, f"{arch}-{task}.onnx")
            clock = time.time()
            r = run(["unlearn", os.path.join(d, "poisoned.onnx"), "--train", os.path.join(d, "train.npz"),
                     "--forget", os.path.join(d, "forget.npz"), "--corrected", os.path.join(d, "corrected.npz"),
                     "--test", os.path.join(EXP, arch, "test.npz"), "--out", out, "--quiet", "--json"] + extra)
            wall = time.time() - clock
            meta = META["models"][f"{arch}/{task}"]
            row = {"task": f"{arch}/{task}", "outcome": r["outcome"], "gradientEvaluations": r["gradientEvaluations"], "seconds": round(wall, 1),
                   "steps": len([s for s in r["steps"] if s["outcome"] in ("accepted", "target-reached")]), "stop": r["steps"][-1]["outcome"],
                   "testDeployed": meta["poisoned"]["test_accuracy"], "testRetrained": meta["retrained"]["test_accuracy"],
                   "retrainSeconds": meta["retrained"]["train_seconds"], "test": r.get("after", r["before"])["test"]["accuracy"]}
            if task == "backdoor":
                model = out if os.path.exists(out) else os.path.join(d, "poisoned.onnx")
                e = run(["eval", model, "--data", os.path.join(EXP, arch, "triggered_test.npz"), "--target-class", "0", "--json"])
                before, gold, after = meta["poisoned"]["attack_success_rate"], meta["retrained"]["attack_success_rate"], e["attackSuccess"]
                row.update(metric="attack success", before=before, after=after, retrained=gold)
            else:
                before, after = r["before"]["corrected"]["accuracy"], r.get("after", r["before"])["corrected"]["accuracy"]
                gold = meta["retrained"]["corrected_accuracy_true_labels"]
                row.update(metric="corrected accuracy", before=before, after=after, retrained=gold)
            row["restored"] = (row["after"] - before) / (gold - before) if gold != before else None
            rows.append(row)
            print(f"{row['task']}: {row['metric']} {before:.3f} -> {row['after']:.3f} (retrained {gold:.3f}), test {row['testDeployed']:.4f} -> {row['test']:.4f}", file=sys.stderr)

pct = lambda v: f"{100 * v:.1f} %"
restored = lambda r: "–" if r["restored"] is None else f"{100 * r['restored']:.0f} %"
lines = ["| task | measure | deployed | after | retrained | restored | test: deployed → after (Δ) | steps taken (why it stopped) | gradient evaluations | wall |",
         "|---|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    lines.append(f"| {r['task']} | {r['metric']} | {pct(r['before'])} | {pct(r['after'])} | {pct(r['retrained'])} | "
                 f"{restored(r)} | "
                 f"{pct(r['testDeployed'])} → {pct(r['test'])} ({100 * (r['test'] - r['testDeployed']):+.1f}) | {r['steps']} ({r['stop']}) | "
                 f"{r['gradientEvaluations']} | {r['seconds']} s |")
table = "\n".join(lines)
if not extra:  # the defaults' record; runs with flags only print their table
    json.dump({"flags": extra, "rows": rows}, open(os.path.join(ROOT, "docs", "benchmarks", "forgetting.json"), "w"), indent=1)
print(table)
