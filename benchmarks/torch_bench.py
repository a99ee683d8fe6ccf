#!/usr/bin/python3
"""PyTorch counterpart of benchmarks/Bench: the same measurements on the same fixtures, data and batch size.

    /usr/bin/python3 benchmarks/torch_bench.py grad|hvp [--fixtures logreg,mlp,cnn,transformer] [--threads T]
        [--batch B] [--tile K] [--repeats R] [--min-ms M] [--warmup-ms W] [--probes P]

Run with Debian's python3-torch (1.13) and python3-onnx. The models are the nn.Modules of testdata/generate.py (class
definitions copied below, since importing generate.py changes torch's global settings), in eval mode (the cnn's
BatchNorm uses its running statistics), float32, with weights read from the ONNX initializers.

grad: mean cross-entropy over all samples and its gradient, batch by batch (gradients weighted by batch size), with
      torch.autograd.grad.
hvp:  exact Hessian-vector product by double backward (grad with create_graph=True, then grad of g.v), per batch;
      Hutchinson's diagonal estimate with the same number of Rademacher probes.
Output: one JSON object per line, fields as in Bench (impl = "pytorch").
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))


# ------------------------------------------------------ models (testdata/models.py, as generate.py uses them)

sys.path.insert(0, os.path.join(HERE, "..", "testdata"))
from models import CNN, MLP, LogReg, TinyTransformer  # noqa: E402

MODELS = {"logreg": LogReg, "mlp": MLP, "cnn": CNN, "transformer": TinyTransformer}


# ------------------------------------------------------ loading


def load(testdata, name, tile):
    """The fixture's model (weights from the ONNX initializers, eval mode), its data inputs (graph input order,
    repeated `tile` times along axis 0), labels and the float64 reference."""
    m = onnx.load(os.path.join(testdata, name, "model.onnx"))
    inits = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in m.graph.initializer}
    model = MODELS[name]()
    missing, unexpected = model.load_state_dict(inits, strict=False)
    assert not unexpected, unexpected
    assert all(k.endswith("num_batches_tracked") for k in missing), missing
    model.eval()
    for p in model.parameters():
        assert p.dtype == torch.float32
    data = np.load(os.path.join(testdata, name, "data.npz"))
    input_names = [i.name for i in m.graph.input if i.name not in inits]
    inputs = [np.concatenate([data[n]] * tile) for n in input_names]
    label = np.concatenate([data["label"]] * tile)
    ref = dict(np.load(os.path.join(testdata, name, "reference.npz")))
    return model, inputs, label, ref


def batches(inputs, label, size):
    n = len(label)
    return [([torch.from_numpy(np.ascontiguousarray(a[s:s + size])) for a in inputs],
             torch.from_numpy(np.ascontiguousarray(label[s:s + size]))) for s in range(0, n, size)]


# ------------------------------------------------------ measured functions


def full_gradient(model, params, data, n):
    """Mean loss over all samples and its gradient (list of tensors), accumulated batch by batch."""
    grads = [torch.zeros_like(p) for p in params]
    loss_sum = 0.0
    for xs, y in data:
        loss = F.cross_entropy(model(*xs), y)
        w = float(len(y))
        for acc, g in zip(grads, torch.autograd.grad(loss, params)):
            acc.add_(g, alpha=w)
        loss_sum += loss.item() * w
    for g in grads:
        g.mul_(1.0 / n)
    return loss_sum / n, grads


def hvp(model, params, data, n, v):
    """Exact H·v of the mean loss by double backward, accumulated batch by batch."""
    out = [torch.zeros_like(p) for p in params]
    for xs, y in data:
        loss = F.cross_entropy(model(*xs), y)
        g = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((gi * vi).sum() for gi, vi in zip(g, v))
        w = float(len(y)) / n
        for acc, h in zip(out, torch.autograd.grad(dot, params)):
            acc.add_(h, alpha=w)
    return out


def hutchinson(model, params, data, n, probes, gen):
    """diag(H) ≈ mean_j z_j ⊙ H z_j with Rademacher z_j."""
    est = [torch.zeros_like(p) for p in params]
    for _ in range(probes):
        z = [torch.randint(0, 2, p.shape, generator=gen, dtype=torch.float32).mul_(2).sub_(1) for p in params]
        for e, zi, hi in zip(est, z, hvp(model, params, data, n, z)):
            e.add_(zi * hi)
    return [e.div_(probes) for e in est]


def timed(f, repeats, min_ms, warmup_ms, min_repeats=3, budget_ms=10_000):
    """Warm-up (>= 1 call, >= warmup_ms), then `repeats` blocks of calls lasting >= min_ms each; median and min of
    (block time / calls) in ms, median process CPU time (all threads) per call, calls per block, blocks. Sampling
    stops early after budget_ms once min_repeats blocks are in. As Bench's Time."""
    t0 = time.perf_counter()
    calls = 0
    while warmup_ms >= 0 and (calls < 1 or (time.perf_counter() - t0) * 1000 < warmup_ms):  # < 0: no warm-up
        f()
        calls += 1
    inner = 1
    if min_ms > 0:
        t0 = time.perf_counter()
        f()
        inner = max(1, math.ceil(min_ms / max((time.perf_counter() - t0) * 1000, 1e-3)))
    wall, cpu = [], []
    start = time.perf_counter()
    while len(wall) < repeats and (len(wall) < min_repeats or (time.perf_counter() - start) * 1000 < budget_ms):
        c0 = time.process_time()
        t0 = time.perf_counter()
        for _ in range(inner):
            f()
        wall.append((time.perf_counter() - t0) * 1000 / inner)
        cpu.append((time.process_time() - c0) * 1000 / inner)
    return statistics.median(wall), min(wall), statistics.median(cpu), inner, len(wall)


def rel_l2(expected, actual):
    e = np.asarray(expected, dtype=np.float64)
    return float(np.sqrt(np.sum((e - actual) ** 2) / np.sum(e ** 2)))


# ------------------------------------------------------ main


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["grad", "hvp"])
    ap.add_argument("--testdata", default=os.path.join(HERE, "..", "testdata"))
    ap.add_argument("--fixtures", default="logreg,mlp,cnn,transformer")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--tile", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--min-ms", type=float, default=50)
    ap.add_argument("--warmup-ms", type=float, default=300)
    ap.add_argument("--probes", type=int, default=16)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    for name in a.fixtures.split(","):
        model, inputs, label, ref = load(a.testdata, name, a.tile)
        names = [k for k, _ in model.named_parameters()]
        params = [p for _, p in model.named_parameters()]
        n = len(label)
        data = batches(inputs, label, a.batch)
        row = {"impl": "pytorch", "mode": a.mode, "fixture": name, "threads": a.threads, "batch": a.batch,
               "tile": a.tile, "samples": n, "params": sum(p.numel() for p in params), "status": "ok"}
        expected_grad = np.concatenate([ref["grad/" + k].ravel() for k in names])
        if a.mode == "grad":
            result = {}

            def run():
                result["loss"], result["grad"] = full_gradient(model, params, data, n)

            med, mn, cpu, inner, nt = timed(run, a.repeats, a.min_ms, a.warmup_ms)
            flat = torch.cat([g.reshape(-1) for g in result["grad"]]).numpy()
            row.update(ms=med, ms_min=mn, cpu_ms=cpu, calls_per_sample=inner, timed_samples=nt, samples_per_s=n / (med / 1000),
                       loss=result["loss"], grad_rel_err=rel_l2(expected_grad, flat))
        else:
            gen = torch.Generator().manual_seed(0)
            v = [torch.randint(0, 2, p.shape, generator=gen, dtype=torch.float32).mul_(2).sub_(1) for p in params]
            med, mn, cpu, _, nt = timed(lambda: hvp(model, params, data, n, v), a.repeats, a.min_ms, a.warmup_ms)
            hutchinson(model, params, data, n, 2, torch.Generator().manual_seed(1))  # warm-up, as Bench
            hmed, hmn, hcpu, _, hn = timed(lambda: hutchinson(model, params, data, n, a.probes, gen),
                                           max(3, a.repeats // 2), 0, -1, min_repeats=1)
            est = hutchinson(model, params, data, n, a.probes, torch.Generator().manual_seed(0))
            exact = np.concatenate([ref["hdiag/" + k].ravel() for k in names])
            row.update(hvp_ms=med, hvp_ms_min=mn, hvp_cpu_ms=cpu, hvp_per_s=1000 / med, probes=a.probes,
                       hutchinson_ms=hmed, hutchinson_ms_min=hmn, hutchinson_cpu_ms=hcpu, hvp_timed_samples=nt,
                       hutchinson_timed_runs=hn, hdiag_rel_err=rel_l2(exact, torch.cat([e.reshape(-1) for e in est]).numpy()))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    sys.exit(main())
