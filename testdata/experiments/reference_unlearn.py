#!/usr/bin/python3
"""PyTorch reference of the method (docs/method.md), used to cross-check onnx-unlearn on one configuration.

    /usr/bin/python3 testdata/experiments/reference_unlearn.py --arch mlp --scenario flip05 \
        --tool tool/bin/Release/net10.0/onnx-unlearn --out docs/benchmarks/crosscheck-mlp-flip05.json

Everything on the reference side is float64 and exact (autograd double backprop, no finite differences):
  Δg       = (1/n)(Σ_{Z̃} ∇ℓ − Σ_Z ∇ℓ) at θ* (the weights read from the ONNX file)
  H        = ∇²L(θ*) over the training set, formed in full (the models have ~2k parameters), so diag(H) is exact and
             H_SS systems are solved directly
  Hutchinson diag(H) ≈ mean_j z_j ⊙ H z_j with Rademacher z_j (torch generator, same number of probes as the tool)
  first order   Δθ = −τ Δg_S          (τ given, or the Cauchy step ‖Δg_S‖² / Δg_Sᵀ H_SS Δg_S)
  second order  Δθ = −(H_SS + λI)⁻¹ Δg_S  (direct solve; the tool runs CG on finite-difference HVPs)

Compared with the tool (which it runs):
  * logits of the ONNX model (tool `predict --logits`) against PyTorch's
  * diag(H) by float64 central differences with the tool's step (autograd gradients): separates the effect of the
    step itself (ReLU/MaxPool kinks crossed by θ ± εe_i) from float32 rounding
  * diag(H): tool `sharpness --exact` (finite-difference HVPs, float32) and `sharpness --probes P` with
    `--estimator hutchinson` and `diag++` (the default of `unlearn --select hessian`, same seed and budget) against the
    exact diagonal; Jaccard overlaps of the
    top-k sets (k = fraction of all elements), including the reference's own Hutchinson estimate (the noise floor of
    the estimator itself)
  * the update with the SAME selection (top-k of the exact diagonal, passed to the tool with `unlearn --mask`) and the
    same τ: relative difference ‖Δθ_tool − Δθ_ref‖ / ‖Δθ_ref‖ for first order, and for second order with the same λ
  * the tool's own Cauchy step τ against the exact one
"""
import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import generate as G  # noqa: E402  (architectures)

torch.set_num_threads(1)


def load_npz(path):
    with np.load(path) as d:
        return {k: d[k] for k in d.files}


def save_npz(path, arrays):
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(v), allow_pickle=False)
            zf.writestr(k + ".npy", buf.getvalue())


def initializers(path):
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}


class Problem:
    """A model at θ* with the mean cross-entropy over a dataset, as a function of the flat parameter vector."""

    def __init__(self, arch, model_path):
        self.model = G.ARCHS[arch][0]().double()
        init = initializers(model_path)
        self.model.load_state_dict({k: torch.from_numpy(v.astype(np.float64)) for k, v in init.items()})
        self.names = [n for n, _ in self.model.named_parameters()]
        self.params = [p for _, p in self.model.named_parameters()]
        self.shapes = [tuple(p.shape) for p in self.params]
        self.sizes = [p.numel() for p in self.params]
        self.theta = self.flat([p.detach() for p in self.params]).numpy()

    @staticmethod
    def flat(ts):
        return torch.cat([t.reshape(-1) for t in ts])

    def split(self, v):
        out, o = {}, 0
        for n, s, k in zip(self.names, self.shapes, self.sizes):
            out[n] = np.asarray(v[o:o + k]).reshape(s)
            o += k
        return out

    def grad_sum(self, x, y):
        """Σ over samples of ∇ℓ (not the mean)."""
        loss = F.cross_entropy(self.model(x), y, reduction="sum")
        return self.flat(torch.autograd.grad(loss, self.params)).numpy()

    def hessian(self, x, y):
        loss = F.cross_entropy(self.model(x), y)
        g = self.flat(torch.autograd.grad(loss, self.params, create_graph=True))
        n = g.numel()
        H = np.zeros((n, n))
        for i in range(n):
            H[i] = self.flat(torch.autograd.grad(g[i], self.params, retain_graph=True)).numpy()
        return (H + H.T) / 2

    def set_theta(self, theta):
        with torch.no_grad():
            o = 0
            for p, k in zip(self.params, self.sizes):
                p.copy_(torch.from_numpy(theta[o:o + k]).reshape(p.shape))
                o += k

    def fd_diagonal(self, x, y, step):
        """diag(H) by central differences of the (float64, autograd) gradient along each e_i, with the tool's step
        ε = step · rms(θ): isolates what the finite-difference step does (ReLU/max kinks crossed) from float32 rounding."""
        eps = step * max(np.sqrt(np.mean(self.theta ** 2)), 1e-3)
        n = len(y)
        out = np.zeros(self.theta.size)
        for i in range(self.theta.size):
            t = self.theta.copy()
            t[i] += eps
            self.set_theta(t)
            gp = self.grad_sum(x, y)[i]
            t[i] -= 2 * eps
            self.set_theta(t)
            gm = self.grad_sum(x, y)[i]
            out[i] = (gp - gm) / (2 * eps * n)
        self.set_theta(self.theta)
        return out

    def accuracy(self, theta, x, y):
        self.set_theta(theta)
        with torch.no_grad():
            acc = (self.model(x).argmax(1) == y).double().mean().item()
        self.set_theta(self.theta)
        return acc


def topk(scores, k):
    # ties (rare in float scores) are broken by index
    return set(np.argsort(-np.asarray(scores), kind="stable")[:k].tolist())


def jaccard(a, b):
    return len(a & b) / max(1, len(a | b))


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / max(1e-300, np.linalg.norm(b)))


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr}")
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="mlp")
    ap.add_argument("--scenario", default="flip05")
    ap.add_argument("--tool", default="tool/bin/Release/net10.0/onnx-unlearn")
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--probes", type=int, default=60, help="HVP budget of the estimators (unlearn's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--damping", type=float, default=0.01)
    ap.add_argument("--step", type=float, default=1e-3, help="the tool's relative finite-difference step (Hvp.RelativeStep)")
    ap.add_argument("--out", help="write the figures here (JSON)")
    a = ap.parse_args()

    d = os.path.join(HERE, a.arch, a.scenario)
    model_path = os.path.join(d, "poisoned.onnx")
    files = {k: os.path.join(d, k + ".npz") for k in ("train", "forget", "corrected")}
    files["test"] = os.path.join(HERE, a.arch, "test.npz")
    data = {k: load_npz(v) for k, v in files.items()}
    T = {k: (torch.from_numpy(v["x"].astype(np.float64)), torch.from_numpy(v["label"])) for k, v in data.items()}
    P = Problem(a.arch, model_path)
    n = len(data["train"]["label"])
    N = P.theta.size
    k = max(1, int(round(a.fraction * N)))
    out = {"arch": a.arch, "scenario": a.scenario, "parameters": int(N), "k": k, "fraction": a.fraction,
           "probes": a.probes, "seed": a.seed, "damping": a.damping, "train_samples": n}
    tmp = tempfile.mkdtemp(prefix="reference-unlearn-")

    # 1. forward pass: ONNX Runtime (through the tool) against PyTorch
    run([a.tool, "predict", model_path, "--data", files["test"], "--out", f"{tmp}/pred.npz", "--logits", "--threads", "1"])
    with torch.no_grad():
        ref_logits = P.model(T["test"][0]).numpy()
    out["logits_max_abs_diff"] = float(np.abs(load_npz(f"{tmp}/pred.npz")["logits"] - ref_logits).max())

    # 2. Δg and the exact Hessian
    dg = (P.grad_sum(*T["corrected"]) - P.grad_sum(*T["forget"])) / n
    H = P.hessian(*T["train"])
    diag = np.diag(H).copy()
    ev = np.linalg.eigvalsh(H)
    fd_diag = P.fd_diagonal(*T["train"], a.step)
    loss = F.cross_entropy(P.model(T["train"][0]), T["train"][1])
    gnorm = float(P.flat(torch.autograd.grad(loss, P.params)).norm())
    out["reference"] = {"grad_norm_at_theta": gnorm, "delta_g_norm": float(np.linalg.norm(dg)),
                        "hessian_eig_min": float(ev[0]), "hessian_eig_max": float(ev[-1]),
                        "hessian_negative_eigs": int((ev < 0).sum())}

    # 3. Hutchinson on the reference side
    gen = torch.Generator().manual_seed(a.seed)
    est, halves = np.zeros(N), [np.zeros(N), np.zeros(N)]
    for j in range(a.probes):
        z = (torch.randint(0, 2, (N,), generator=gen).double() * 2 - 1).numpy()
        x = z * (H @ z)
        est += x / a.probes
        halves[0 if j < (a.probes + 1) // 2 else 1] += x

    # 4. the tool's diagonals
    run([a.tool, "sharpness", model_path, "--data", files["train"], "--exact", "--out", f"{tmp}/exact.npz", "--json", "--threads", "1"])
    for name in ("hutchinson", "diag++"):
        run([a.tool, "sharpness", model_path, "--data", files["train"], "--probes", str(a.probes), "--seed", str(a.seed),
             "--estimator", name, "--out", f"{tmp}/{name}.npz", "--json", "--threads", "1"])
    scores = lambda f: np.concatenate([load_npz(f)[nm].reshape(-1) for nm in P.names]).astype(np.float64)
    tool_exact, tool_hutch, tool_dpp = scores(f"{tmp}/exact.npz"), scores(f"{tmp}/hutchinson.npz"), scores(f"{tmp}/diag++.npz")
    S = topk(diag, k)
    out["diagonal"] = {
        "fd_step_relative": a.step,
        "reference_fd_float64_vs_reference_relative_error": rel(fd_diag, diag),
        "tool_exact_vs_reference_fd_float64_relative_error": rel(tool_exact, fd_diag),
        "jaccard_topk_reference_fd_float64_vs_reference_exact": jaccard(topk(fd_diag, k), S),
        "tool_exact_vs_reference_relative_error": rel(tool_exact, diag),
        "tool_hutchinson_vs_reference_relative_error": rel(tool_hutch, diag),
        "tool_diagpp_vs_reference_relative_error": rel(tool_dpp, diag),
        "reference_hutchinson_vs_reference_relative_error": rel(est, diag),
        "jaccard_topk_tool_exact_vs_reference_exact": jaccard(topk(tool_exact, k), S),
        "jaccard_topk_tool_hutchinson_vs_reference_exact": jaccard(topk(tool_hutch, k), S),
        "jaccard_topk_tool_diagpp_vs_reference_exact": jaccard(topk(tool_dpp, k), S),
        "jaccard_topk_reference_hutchinson_vs_reference_exact": jaccard(topk(est, k), S),
        "jaccard_topk_tool_hutchinson_vs_reference_hutchinson": jaccard(topk(tool_hutch, k), topk(est, k)),
        "jaccard_topk_reference_hutchinson_half_vs_half": jaccard(topk(halves[0], k), topk(halves[1], k)),
    }

    # 5. the same selection (top-k of the exact diagonal) through the tool
    mask = np.zeros(N, dtype=np.uint8)
    mask[sorted(S)] = 1
    save_npz(f"{tmp}/mask.npz", P.split(mask))
    Sidx = np.array(sorted(S))
    dgS = np.zeros(N)
    dgS[Sidx] = dg[Sidx]
    HSS = H[np.ix_(Sidx, Sidx)]
    tau = float(dgS[Sidx] @ dgS[Sidx] / (dgS[Sidx] @ HSS @ dgS[Sidx]))
    updates = {}

    def tool_update(extra, name):
        cmd = [a.tool, "unlearn", model_path, "--train", files["train"], "--forget", files["forget"],
               "--corrected", files["corrected"], "--test", files["test"], "--mask", f"{tmp}/mask.npz",
               "--out", f"{tmp}/{name}.onnx", "--report", f"{tmp}/{name}.json", "--seed", str(a.seed), "--threads", "1"] + extra
        run(cmd)
        rep = json.load(open(f"{tmp}/{name}.json"))
        if rep.get("outputModel") is None:
            return rep, None
        new = initializers(f"{tmp}/{name}.onnx")
        return rep, np.concatenate([new[nm].reshape(-1).astype(np.float64) for nm in P.names]) - P.theta

    def summary(rep, delta_tool, delta_ref):
        row = {"tool_outcome": rep["outcome"], "tool_update_norm": rep["updateNorm"],
               "reference_update_norm": float(np.linalg.norm(delta_ref))}
        if delta_tool is not None:
            changed = set(np.flatnonzero(delta_tool != 0).tolist())
            row["relative_difference"] = rel(delta_tool, delta_ref)
            row["cosine"] = float(delta_tool @ delta_ref / (np.linalg.norm(delta_tool) * np.linalg.norm(delta_ref)))
            row["changed_elements_outside_selection"] = len(changed - S)
            for key, (x, y) in {"corrected": T["corrected"], "test": T["test"]}.items():
                row[f"{key}_accuracy_tool"] = rep["after"][key]["accuracy"]
                row[f"{key}_accuracy_reference"] = P.accuracy(P.theta + delta_ref, x, y)
        if rep.get("cg"):
            row["tool_cg"] = rep["cg"]
        return row

    ref_fo = -tau * dgS
    rep, delta = tool_update(["--update", "first-order", "--tau", repr(tau)], "fo")
    updates["first_order_same_tau"] = {"tau": tau, **summary(rep, delta, ref_fo)}
    rep, delta = tool_update(["--update", "first-order"], "fo_cauchy")
    updates["first_order_tool_cauchy_step"] = {"tau_reference": tau, "tau_tool": rep.get("tau"),
                                               "tau_relative_difference": abs(rep.get("tau") - tau) / tau,
                                               **summary(rep, delta, ref_fo)}
    d_exact = np.linalg.solve(HSS + a.damping * np.eye(len(Sidx)), dg[Sidx])
    ref_so = np.zeros(N)
    ref_so[Sidx] = -d_exact
    out["reference"]["hss_eig_min"] = float(np.linalg.eigvalsh(HSS)[0])
    for tol in ("1e-3", "1e-6"):
        rep, delta = tool_update(["--update", "second-order", "--damping", repr(a.damping), "--tolerance", tol,
                                  "--max-iterations", "200"], "so")
        updates[f"second_order_tolerance_{tol}"] = summary(rep, delta, ref_so)
    out["updates"] = updates
    text = json.dumps(out, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
