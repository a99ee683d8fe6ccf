#!/usr/bin/python3
"""Generate the unlearning experiments of docs/benchmarks/unlearning.md.

Run with Debian's python (python3-torch 1.13, python3-onnx 1.12, python3-sklearn), CPU only:

    /usr/bin/python3 testdata/experiments/generate.py

Data: sklearn's digits (1797 images 8x8, pixel values /16 in [0, 1]), split 70/30 into train (1257) and test (540)
with a fixed seed (stratified).

Scenarios (one folder each, under cnn/ and mlp/):

  flip01, flip05, flip20   label poisoning. F = 1 %, 5 %, 20 % of the TRAINING SET (13, 63, 251 samples) is drawn
                           (seeded, uniformly) from the training samples of classes 3, 5 and 9 (the digits that look
                           most like an 8; class 3 alone has only ~128 training samples, too few for 20 %) and
                           relabelled 8. The samples are nested: flip01 ⊂ flip05 ⊂ flip20. The unlearning request
                           covers ALL poisoned samples, so retraining on the corrected labels is exactly the gold
                           standard of the request.
  backdoor                 5 % of the training set (63 samples of classes ≠ 0) get a 2x2 trigger (pixels set to 1.0 in
                           the bottom-left corner, rows 6-7, columns 0-1; that corner is non-zero in only 9 % of the
                           digits) and the label 0. They replace their clean versions in the training set.

Per scenario and architecture (<arch>/<scenario>/):
  poisoned.onnx     trained on the poisoned training set
  retrained.onnx    the same architecture from the same initial weights and the same minibatch order, trained on the
                    clean training set (the gold standard); its wall time is in meta.json
  train.npz         the training set as trained (poisoned): keys x, label
  forget.npz        Z: the poisoned samples as trained (flipped labels / triggered images with label 0)
  corrected.npz     Z̃: the same samples corrected (true labels / clean images with true labels)
Per architecture: <arch>/test.npz (held-out set), <arch>/triggered_test.npz (the test images with the trigger, TRUE
labels; attack success rate = share predicted 0 among those whose true class is not 0).

Architectures: cnn  Conv(1→8,3x3,pad 1)→ReLU→MaxPool 2→Conv(8→16,3x3,pad 1)→ReLU→MaxPool 2→Flatten→Linear(64→10),
                    input x [N,1,8,8], 1,898 parameters;
               mlp  Linear(64→32)→ReLU→Linear(32→10), input x [N,64], 2,410 parameters.
ONNX: opset 13, do_constant_folding=False, input `x` (dynamic N), output `logits`, initializers named as in PyTorch.
Training: Adam (lr 0.01, cosine-annealed to 0 so that θ* is close to a stationary point), minibatch 64, 100 epochs, one thread, deterministic. Everything is seeded; reruns give
identical models and data (the .npz files are written with fixed zip timestamps).
"""
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from common import save_npz  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 0
EPOCHS = 100
LR = 0.01
BATCH = 64
FLIP_SOURCES = (3, 5, 9)
FLIP_TARGET = 8
FLIP_SHARES = {"flip01": 0.01, "flip05": 0.05, "flip20": 0.20}
BACKDOOR_SHARE = 0.05
BACKDOOR_TARGET = 0


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(torch.flatten(x, 1))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


ARCHS = {"cnn": (CNN, (1, 8, 8)), "mlp": (MLP, (64,))}


def digits_split():
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=SEED, stratify=y)
    return xtr, ytr, xte, yte


def stamp(x):
    """The backdoor trigger: a 2x2 patch of 1.0 at rows 6-7, columns 0-1 of the 8x8 image (flat layout)."""
    img = x.reshape(-1, 8, 8).copy()
    img[:, 6:8, 0:2] = 1.0
    return img.reshape(x.shape)


def train(model, x, y, seed):
    """Adam, minibatch BATCH, EPOCHS epochs; the minibatch order depends only on `seed`."""
    g = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, EPOCHS)
    model.train()
    t0 = time.perf_counter()
    for _ in range(EPOCHS):
        perm = torch.randperm(len(yt), generator=g)
        for i in range(0, len(yt), BATCH):
            idx = perm[i:i + BATCH]
            opt.zero_grad()
            F.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
        sched.step()
    seconds = time.perf_counter() - t0
    model.eval()
    return seconds


def predict(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).argmax(1).numpy()


def export(model, shape, path):
    model.eval()
    torch.onnx.export(model, torch.zeros((2,) + shape), path, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}}, opset_version=13,
                      do_constant_folding=False, keep_initializers_as_inputs=False)
    m = onnx.load(path)
    onnx.checker.check_model(m)
    have = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    want = {n: p.detach().numpy() for n, p in model.named_parameters()}
    assert set(have) == set(want), sorted(set(have) ^ set(want))
    for n, v in want.items():
        assert have[n].dtype == np.float32 and np.array_equal(have[n], v), n
    assert [i.name for i in m.graph.input] == ["x"] and [o.name for o in m.graph.output] == ["logits"]


def scenarios(xtr, ytr):
    """name -> (x as trained, labels as trained, indices of the poisoned samples, clean x, clean labels)."""
    rng = np.random.RandomState(SEED + 1)
    pool = rng.permutation(np.flatnonzero(np.isin(ytr, FLIP_SOURCES)))
    out = {}
    n = len(ytr)
    for name, share in FLIP_SHARES.items():
        k = int(round(share * n))
        assert k <= len(pool), (name, k, len(pool))
        idx = np.sort(pool[:k])
        y = ytr.copy()
        y[idx] = FLIP_TARGET
        out[name] = (xtr, y, idx)
    rng = np.random.RandomState(SEED + 2)
    k = int(round(BACKDOOR_SHARE * n))
    idx = np.sort(rng.permutation(np.flatnonzero(ytr != BACKDOOR_TARGET))[:k])
    x = xtr.copy()
    x[idx] = stamp(xtr[idx])
    y = ytr.copy()
    y[idx] = BACKDOOR_TARGET
    out["backdoor"] = (x, y, idx)
    return out


def main():
    xtr, ytr, xte, yte = digits_split()
    meta = {"train_samples": len(ytr), "test_samples": len(yte), "epochs": EPOCHS, "lr": LR, "batch": BATCH,
            "torch_threads": torch.get_num_threads(), "flip_sources": FLIP_SOURCES, "flip_target": FLIP_TARGET,
            "backdoor_target": BACKDOOR_TARGET, "models": {}}
    for arch, (cls, shape) in ARCHS.items():
        adir = os.path.join(HERE, arch)
        os.makedirs(adir, exist_ok=True)
        r = lambda a: a.reshape((-1,) + shape)
        save_npz(os.path.join(adir, "test.npz"), {"x": r(xte), "label": yte})
        save_npz(os.path.join(adir, "triggered_test.npz"), {"x": r(stamp(xte)), "label": yte})
        for name, (x, y, idx) in scenarios(xtr, ytr).items():
            sdir = os.path.join(adir, name)
            os.makedirs(sdir, exist_ok=True)
            torch.manual_seed(SEED + 10)  # the same initial weights for every model of an architecture
            init = cls().state_dict()
            rows = {}
            for kind, (xs, ys) in {"poisoned": (x, y), "retrained": (xtr, ytr)}.items():
                model = cls()
                model.load_state_dict(init)
                secs = train(model, r(xs), ys, seed=SEED + 20)
                export(model, shape, os.path.join(sdir, kind + ".onnx"))
                p_te = predict(model, r(xte))
                p_trig = predict(model, r(stamp(xte)))
                p_z = predict(model, r(x[idx]))
                rows[kind] = {
                    "train_seconds": round(secs, 3),
                    "train_accuracy": float((predict(model, r(xs)) == ys).mean()),
                    "test_accuracy": float((p_te == yte).mean()),
                    "forget_accuracy_poisoned_labels": float((p_z == y[idx]).mean()),
                    "corrected_accuracy_true_labels": float((predict(model, r(xtr[idx])) == ytr[idx]).mean()),
                    "attack_success_rate": float((p_trig[yte != BACKDOOR_TARGET] == BACKDOOR_TARGET).mean()),
                }
            save_npz(os.path.join(sdir, "train.npz"), {"x": r(x), "label": y})
            save_npz(os.path.join(sdir, "forget.npz"), {"x": r(x[idx]), "label": y[idx]})
            save_npz(os.path.join(sdir, "corrected.npz"), {"x": r(xtr[idx]), "label": ytr[idx]})
            meta["models"][f"{arch}/{name}"] = {"poisoned_samples": int(len(idx)),
                                                "poisoned_classes": np.bincount(ytr[idx], minlength=10).tolist(), **rows}
            print(arch, name, len(idx), json.dumps(rows), flush=True)
    with open(os.path.join(HERE, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
