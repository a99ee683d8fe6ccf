#!/usr/bin/python3
"""Generate the ONNX test fixtures under testdata/.

Run with Debian's python (python3-torch 1.13, python3-onnx 1.12, python3-sklearn):

    OMP_NUM_THREADS=2 /usr/bin/python3 testdata/generate.py [fixture ...]

(naming fixtures regenerates only those). For each fixture <name> it writes testdata/<name>/:
  model.onnx      float32 model, every trainable parameter (and every BatchNorm
                  running_mean / running_var) is an initializer named exactly as
                  in PyTorch (model.named_parameters() / named_buffers()).
  data.npz        one array per ONNX graph input (axis 0 = samples) + `label` (int64).
  reference.npz   float64 PyTorch reference (model.double(), eval mode, on the data
                  cast to float64) for the MEAN cross-entropy over all samples:
                    loss               scalar
                    logits             [N, C]
                    grad/<param>       dL/dparam
                    hdiag/<param>      exact Hessian diagonal d2L/dparam_i^2
                  logreg also has hessian_full: the full Hessian wrt
                  concat(weight.flatten(), bias).

The .npz files are written with fixed zip timestamps so that reruns are
byte-identical. The script checks itself (asserts) before writing anything.
"""
import copy
import io
import math
import os
import shutil
import sys
import time
import zipfile

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import numpy_helper
from sklearn.datasets import load_digits

torch.set_num_threads(2)
torch.use_deterministic_algorithms(True)

HERE = os.path.dirname(os.path.abspath(__file__))
N_SAMPLES = 64


# --------------------------------------------------------------------------- models


class LogReg(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x)))


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()

    def forward(self, x):
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return self.relu(h + x)


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.block = ResBlock(4)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 4 * 4, 10)
        self.relu = nn.ReLU()

    def forward(self, x):
        h = self.relu(self.bn(self.conv(x)))
        h = self.block(h)
        h = self.pool(h)
        return self.fc(torch.flatten(h, 1))


class TinyTransformer(nn.Module):
    def __init__(self, vocab=16, seq=8, d=8, hidden=16, classes=3):
        super().__init__()
        self.d = d
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(0.1 * torch.randn(seq, d))
        self.ln1 = nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)
        self.head = nn.Linear(d, classes)

    def forward(self, tokens):
        h = self.embed(tokens) + self.pos
        a = self.ln1(h)
        q, k, v = self.q(a), self.k(a), self.v(a)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d)
        h = h + self.o(torch.softmax(scores, dim=-1) @ v)
        h = h + self.fc2(F.gelu(self.fc1(self.ln2(h))))  # exact (erf) GELU
        return self.head(h.mean(dim=1))


class CharLSTM(nn.Module):
    """Next-character model: logits at every step."""

    def __init__(self, vocab, d=8, hidden=16):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.lstm = nn.LSTM(d, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, vocab)

    def forward(self, tokens):
        h, _ = self.lstm(self.embed(tokens))
        return self.fc(h)


# --------------------------------------------------------------------------- data


def digits():
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    subset = np.sort(np.random.RandomState(0).permutation(len(y))[:N_SAMPLES])
    return x, y, subset


def token_data(n, rng):
    """label = which token group (0-4, 5-9, 10-14) occurs most; token 15 is neutral; no ties."""
    toks, labels = [], []
    while len(toks) < n:
        t = rng.randint(0, 16, size=8)
        counts = np.array([np.sum((t >= 5 * g) & (t < 5 * g + 5)) for g in range(3)])
        if np.sum(counts == counts.max()) != 1:
            continue
        toks.append(t)
        labels.append(int(np.argmax(counts)))
    return np.array(toks, dtype=np.int64), np.array(labels, dtype=np.int64)


def ce(logits, y):
    """Mean cross-entropy over every labelled position (class axis last)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


CHAR_TEXT = ("the cat sat on the mat. the dog ran to the cat. a rat hid in the hut. "
             "the hen is red. ten men sat in a den. the sun is hot. a big bat fell. the pup is fat. "
             "a cat and a dog and a hen. ")


def char_data(n, seq, rng):
    """Windows of CHAR_TEXT (repeated): tokens = characters [t, t+seq), label = characters [t+1, t+seq+1)."""
    vocab = sorted(set(CHAR_TEXT))
    text = np.array([vocab.index(ch) for ch in CHAR_TEXT * 4], dtype=np.int64)
    starts = rng.randint(0, len(text) - seq - 1, size=n)
    toks = np.stack([text[s:s + seq] for s in starts])
    labels = np.stack([text[s + 1:s + seq + 1] for s in starts])
    return toks, labels, vocab


def train(model, x, y, epochs, lr, seed, batch=64):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            ce(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(-1) == y).double().mean().item()
    return acc


# --------------------------------------------------------------------------- export


def export(model, example, input_names, path, opset, training_mode, fold=False):
    model.eval()
    torch.onnx.export(
        model, example, path,
        input_names=input_names, output_names=["logits"],
        dynamic_axes={**{n: {0: "N"} for n in input_names}, "logits": {0: "N"}},
        opset_version=opset, do_constant_folding=fold, training=training_mode,
        keep_initializers_as_inputs=False)
    m = onnx.load(path)
    if fold:  # folded weights keep the exporter's names (see onnx_parameter_map)
        return m, []
    notes = fix_initializer_names(m, model)
    return m, notes


def expected_initializers(model):
    """Parameters + BatchNorm running stats (num_batches_tracked is not used in eval)."""
    out = {n: p.detach().numpy() for n, p in model.named_parameters()}
    for n, b in model.named_buffers():
        if n.endswith("running_mean") or n.endswith("running_var"):
            out[n] = b.detach().numpy()
    return out


def fix_initializer_names(m, model):
    """Make every parameter / running stat an initializer named as in PyTorch.

    Handles two things torch 1.13's exporter does:
      * initializer de-duplication: two tensors with equal values (e.g. an untrained
        LayerNorm's weight) become one initializer plus `name = Identity(other)`;
      * renaming to `onnx::Op_N` (e.g. a folded/transposed weight).
    """
    notes = []
    want = expected_initializers(model)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    # 1. Identity(initializer) -> own initializer
    for node in list(g.node):
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] in want \
                and node.output[0] not in inits:
            t = numpy_helper.from_array(numpy_helper.to_array(inits[node.input[0]]).copy(), node.output[0])
            g.initializer.append(t)
            inits[t.name] = t
            g.node.remove(node)
            notes.append(f"de-duplicated {node.output[0]} = Identity({node.input[0]}) -> own initializer")
    # 2. renamed initializers: match by value (or transposed value)
    for t in list(g.initializer):
        if t.name in want:
            continue
        arr = numpy_helper.to_array(t)
        match = [n for n, v in want.items() if n not in inits and v.shape == arr.shape and np.array_equal(v, arr)]
        if len(match) == 1:
            old, new = t.name, match[0]
            t.name = new
            for node in g.node:
                for i, s in enumerate(node.input):
                    if s == old:
                        node.input[i] = new
            inits[new] = t
            del inits[old]
            notes.append(f"renamed initializer {old} -> {new}")
        else:
            raise AssertionError(f"unexpected initializer {t.name} {arr.shape} (candidates {match})")
    return notes


def verify_onnx(m, model, input_names):
    onnx.checker.check_model(m)
    g = m.graph
    want = expected_initializers(model)
    have = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    assert set(have) == set(want), (sorted(set(have) ^ set(want)))
    for n, v in want.items():
        assert have[n].dtype == np.float32 and np.array_equal(have[n], v), n
    assert [i.name for i in g.input] == input_names, [i.name for i in g.input]
    assert [o.name for o in g.output] == ["logits"]
    for node in g.node:
        if node.op_type == "BatchNormalization":
            assert len(node.output) == 1, "BatchNormalization must be in inference form"
            assert all(a.name != "training_mode" or a.i == 0 for a in node.attribute)


# ----------------------------------------------------- tiny numpy ONNX evaluator (float64)


def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _conv(x, w, b, a):
    assert a.get("group", 1) == 1 and all(d == 1 for d in a.get("dilations", [1, 1]))
    kh, kw = w.shape[2:]
    pt, pl, pb, pr = a.get("pads", [0, 0, 0, 0])
    sh, sw = a.get("strides", [1, 1])
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh = (xp.shape[2] - kh) // sh + 1
    ow = (xp.shape[3] - kw) // sw + 1
    out = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for u in range(kh):
        for v in range(kw):
            patch = xp[:, :, u:u + sh * (oh - 1) + 1:sh, v:v + sw * (ow - 1) + 1:sw]
            out += np.einsum("nchw,mc->nmhw", patch, w[:, :, u, v])
    if b is not None:
        out += b[None, :, None, None]
    return out


def _maxpool(x, a):
    kh, kw = a["kernel_shape"]
    sh, sw = a.get("strides", [1, 1])
    assert not any(a.get("pads", [0, 0, 0, 0])) and not a.get("ceil_mode", 0)
    oh = (x.shape[2] - kh) // sh + 1
    ow = (x.shape[3] - kw) // sw + 1
    out = np.full(x.shape[:2] + (oh, ow), -np.inf)
    for u in range(kh):
        for v in range(kw):
            out = np.maximum(out, x[:, :, u:u + sh * (oh - 1) + 1:sh, v:v + sw * (ow - 1) + 1:sw])
    return out


def _lstm(i, a):
    """ONNX LSTM (forward, layout 0, default activations, gates i, o, f, c); returns Y [T, 1, N, H]."""
    assert a.get("direction", b"forward") in (b"forward", "forward") and not a.get("layout", 0)
    assert "activations" not in a and "clip" not in a and not a.get("input_forget", 0)
    x, w, r = i[0], i[1][0], i[2][0]
    assert len(i) < 5 or i[4] is None, "sequence_lens"
    hidden = a["hidden_size"]
    b = i[3][0] if len(i) > 3 and i[3] is not None else np.zeros(8 * hidden)
    h = i[5][0] if len(i) > 5 and i[5] is not None else np.zeros((x.shape[1], hidden))
    c = i[6][0] if len(i) > 6 and i[6] is not None else np.zeros((x.shape[1], hidden))
    sig = lambda v: 1 / (1 + np.exp(-v))
    ys = []
    for t in range(x.shape[0]):
        z = x[t] @ w.T + h @ r.T + b[:4 * hidden] + b[4 * hidden:]
        gi, go, gf, gc = (z[:, k * hidden:(k + 1) * hidden] for k in range(4))
        c = sig(gf) * c + sig(gi) * np.tanh(gc)
        h = sig(go) * np.tanh(c)
        ys.append(h)
    return np.stack(ys)[:, None]


def run_onnx_numpy(m, feeds):
    env = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in m.graph.initializer}
    env.update(feeds)
    for node in m.graph.node:
        a = _attrs(node)
        i = [env[s] if s else None for s in node.input]
        op = node.op_type
        if op == "Constant":
            r = numpy_helper.to_array(a["value"])
            r = r.astype(np.float64) if r.dtype.kind == "f" else r
        elif op == "Identity":
            r = i[0]
        elif op == "Gemm":
            A = i[0].T if a.get("transA", 0) else i[0]
            B = i[1].T if a.get("transB", 0) else i[1]
            r = a.get("alpha", 1.0) * (A @ B)
            if len(i) > 2:
                r = r + a.get("beta", 1.0) * i[2]
        elif op == "MatMul":
            r = i[0] @ i[1]
        elif op == "Transpose":
            r = np.transpose(i[0], a.get("perm"))
        elif op == "Shape":
            r = np.array(i[0].shape, dtype=np.int64)
        elif op == "Unsqueeze":
            r = np.expand_dims(i[0], tuple(int(v) for v in i[1]))
        elif op == "Squeeze":
            r = np.squeeze(i[0], tuple(int(v) for v in i[1]))
        elif op == "Concat":
            r = np.concatenate(i, axis=a["axis"])
        elif op == "ConstantOfShape":
            v = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, np.float32)
            r = np.full(tuple(int(d) for d in i[0]), v.reshape(-1)[0], dtype=np.float64 if v.dtype.kind == "f" else v.dtype)
        elif op == "LSTM":
            r = _lstm(i, a)
        elif op == "Add":
            r = i[0] + i[1]
        elif op == "Mul":
            r = i[0] * i[1]
        elif op == "Div":
            r = i[0] / i[1]
        elif op == "Relu":
            r = np.maximum(i[0], 0.0)
        elif op == "Erf":
            r = np.vectorize(math.erf)(i[0])
        elif op == "Softmax":
            ax = a.get("axis", -1)
            e = np.exp(i[0] - i[0].max(axis=ax, keepdims=True))
            r = e / e.sum(axis=ax, keepdims=True)
        elif op == "ReduceMean":
            r = i[0].mean(axis=tuple(a["axes"]), keepdims=bool(a.get("keepdims", 1)))
        elif op == "Flatten":
            ax = a.get("axis", 1)
            r = i[0].reshape(int(np.prod(i[0].shape[:ax])), -1)
        elif op == "Gather":
            assert a.get("axis", 0) == 0
            r = i[0][i[1]]
        elif op == "Conv":
            r = _conv(i[0], i[1], i[2] if len(i) > 2 else None, a)
        elif op == "MaxPool":
            assert len(node.output) == 1
            r = _maxpool(i[0], a)
        elif op == "BatchNormalization":
            sc, bi, mu, var = (t[None, :, None, None] for t in i[1:5])
            r = (i[0] - mu) / np.sqrt(var + a.get("epsilon", 1e-5)) * sc + bi
        elif op == "LayerNormalization":
            ax = a.get("axis", -1)
            assert ax == -1
            mu = i[0].mean(axis=-1, keepdims=True)
            var = ((i[0] - mu) ** 2).mean(axis=-1, keepdims=True)
            r = (i[0] - mu) / np.sqrt(var + a.get("epsilon", 1e-5)) * i[1]
            if len(i) > 2 and i[2] is not None:
                r = r + i[2]
        else:
            raise NotImplementedError(op)
        env[node.output[0]] = r
    return env["logits"]


# --------------------------------------------------------------------------- reference


def reference(model, inputs, label, hessian_full=False):
    m = copy.deepcopy(model).double().eval()
    args = [torch.from_numpy(v).double() if v.dtype.kind == "f" else torch.from_numpy(v) for v in inputs]
    y = torch.from_numpy(label)
    names = [n for n, _ in m.named_parameters()]
    params = [p for _, p in m.named_parameters()]
    logits = m(*args)
    loss = ce(logits, y)  # mean over all samples (and positions)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    ref = {"loss": np.array(loss.item(), dtype=np.float64), "logits": logits.detach().numpy()}
    full_rows = []
    for n, p, gr in zip(names, params, grads):
        gf = gr.reshape(-1)
        hd = np.empty(gf.numel())
        for i in range(gf.numel()):
            if hessian_full:
                row = torch.autograd.grad(gf[i], params, retain_graph=True)
                row = torch.cat([r.reshape(-1) for r in row])
                full_rows.append(row.detach().numpy())
                hd[i] = row[sum(q.numel() for q in params[:names.index(n)]) + i].item()
            else:
                hd[i] = torch.autograd.grad(gf[i], p, retain_graph=True)[0].reshape(-1)[i].item()
        ref["grad/" + n] = gr.detach().numpy().copy()
        ref["hdiag/" + n] = hd.reshape(p.shape)
    if hessian_full:
        ref["hessian_full"] = np.stack(full_rows)
    return ref, m, args, y


def fd_checks(m, args, y, ref, rng, per_tensor=3, h0=1e-4):
    """4-point central differences in float64: gradient from the loss, Hessian diagonal from the gradient.

    ReLU / MaxPool make the loss only piecewise smooth, so the activation pattern (ReLU
    signs, MaxPool argmax) is recorded at every stencil point; if a point lands on the
    other side of a kink the step is shrunk.
    """
    worst_g = worst_h = 0.0
    rec = []

    def hook(mod, inp, out):
        if isinstance(mod, nn.MaxPool2d):
            idx = F.max_pool2d(inp[0], mod.kernel_size, mod.stride, mod.padding, return_indices=True)[1]
            rec.append(idx.numpy().tobytes())
        else:
            rec.append((inp[0] > 0).numpy().tobytes())

    hooks = [mod.register_forward_hook(hook) for mod in m.modules() if isinstance(mod, (nn.ReLU, nn.MaxPool2d))]

    def loss_at():
        with torch.no_grad():
            return ce(m(*args), y).item()

    def grad_at(p, i):
        loss = ce(m(*args), y)
        return torch.autograd.grad(loss, p)[0].reshape(-1)[i].item()

    def stencil(f, p, i):
        flat = p.data.view(-1)
        x0 = flat[i].item()
        h = h0
        while True:
            rec.clear()
            f()
            base = list(rec)
            vals, same = [], True
            for s in (2, 1, -1, -2):
                flat[i] = x0 + s * h
                rec.clear()
                vals.append(f())
                same = same and rec == base
            flat[i] = x0
            if same:
                return (-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * h), h
            h /= 10
            assert h > 1e-8, "cannot avoid kink"

    nshrunk = 0
    for n, p in m.named_parameters():
        g = ref["grad/" + n].reshape(-1)
        hd = ref["hdiag/" + n].reshape(-1)
        cand = np.flatnonzero(np.abs(g) > 1e-5)
        for i in rng.choice(cand, size=min(per_tensor, len(cand)), replace=False):
            fd, h = stencil(loss_at, p, i)
            nshrunk += h < h0
            rel = abs(fd - g[i]) / max(abs(fd), abs(g[i]))
            assert rel < 1e-6, (n, i, fd, g[i], rel, h)
            worst_g = max(worst_g, rel)
        cand = np.flatnonzero(np.abs(hd) > 1e-5)
        for i in rng.choice(cand, size=min(per_tensor, len(cand)), replace=False):
            fd, h = stencil(lambda: grad_at(p, i), p, i)
            nshrunk += h < h0
            rel = abs(fd - hd[i]) / max(abs(fd), abs(hd[i]))
            assert rel < 1e-4, (n, i, fd, hd[i], rel, h)
            worst_h = max(worst_h, rel)
    for hk in hooks:
        hk.remove()
    return worst_g, worst_h, nshrunk


def logreg_closed_form_hessian(model, x, y):
    W = model.fc.weight.detach().double().numpy()
    b = model.fc.bias.detach().double().numpy()
    x = x.astype(np.float64)
    z = x @ W.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    n, c, d = x.shape[0], W.shape[0], W.shape[1]
    A = np.einsum("nc,cd->ncd", p, np.eye(c)) - np.einsum("nc,nd->ncd", p, p)  # per-sample softmax Hessian
    xt = np.concatenate([x, np.ones((n, 1))], 1)  # [x, 1]
    Hcd = np.einsum("ncd,nj,nk->cjdk", A, xt, xt) / n  # [c, d+1, c, d+1]
    H = np.zeros((c * d + c, c * d + c))
    # order: weight.flatten() (index c*d + j), then bias (index c*d + c')
    H[:c * d, :c * d] = Hcd[:, :d, :, :d].reshape(c * d, c * d)
    H[:c * d, c * d:] = Hcd[:, :d, :, d].reshape(c * d, c)
    H[c * d:, :c * d] = Hcd[:, d, :, :d].reshape(c, c * d)
    H[c * d:, c * d:] = Hcd[:, d, :, d]
    return H


# --------------------------------------------------------------------------- writing


def save_npz(path, arrays):
    """np.savez_compressed equivalent with fixed timestamps (byte-reproducible)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for k, v in arrays.items():
            info = zipfile.ZipInfo(k + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            buf = io.BytesIO()
            v = np.asarray(v)  # (np.ascontiguousarray would turn the scalar loss into shape (1,))
            np.lib.format.write_array(buf, v if v.flags.c_contiguous else v.copy(order="C"), allow_pickle=False)
            zf.writestr(info, buf.getvalue())


def onnx_parameter_map(m, model):
    """For an export with constant folding: which PyTorch parameters each initializer is, and how to rearrange them.

    torch.onnx folds nn.LSTM's weights into W [1, 4H, I], R [1, 4H, H] and B [1, 8H] (b_ih then b_hh), reordering the
    gates from PyTorch's (i, f, g, o) to ONNX's (i, o, f, c), and nn.Linear's weight into its transpose for MatMul;
    such initializers get names like `onnx::LSTM_111`. Returns {initializer: (description, f)} where f maps a dict of
    arrays by PyTorch parameter name (values, gradients or Hessian diagonals: the maps only move coordinates) to the
    initializer's array. Checks that every initializer matches exactly one candidate and that each parameter is used.
    """
    def gates(v):
        i, f, g, o = np.split(v, 4, axis=0)
        return np.concatenate([i, o, f, g], axis=0)

    candidates = {}
    for n, p in model.named_parameters():
        candidates[n] = (lambda n: lambda d: d[n])(n)
        if p.dim() == 2:
            candidates[n + " transposed"] = (lambda n: lambda d: d[n].T)(n)
    for mod_name, mod in model.named_modules():
        if isinstance(mod, nn.LSTM):
            assert mod.num_layers == 1 and not mod.bidirectional and mod.bias
            pre = mod_name + "."
            candidates[pre + "weight_ih_l0 as W"] = lambda d, pre=pre: gates(d[pre + "weight_ih_l0"])[None]
            candidates[pre + "weight_hh_l0 as R"] = lambda d, pre=pre: gates(d[pre + "weight_hh_l0"])[None]
            candidates[pre + "bias_ih_l0, bias_hh_l0 as B"] = lambda d, pre=pre: np.concatenate(
                [gates(d[pre + "bias_ih_l0"]), gates(d[pre + "bias_hh_l0"])])[None]
    values = {n: p.detach().numpy() for n, p in model.named_parameters()}
    mapping = {}
    for t in m.graph.initializer:
        arr = numpy_helper.to_array(t)
        match = [k for k, f in candidates.items() if f(values).shape == arr.shape and np.array_equal(f(values), arr)]
        assert len(match) == 1, (t.name, arr.shape, match)
        assert arr.dtype == np.float32, t.name
        mapping[t.name] = (match[0], candidates[match[0]])
    assert sum(numpy_helper.to_array(t).size for t in m.graph.initializer) == sum(v.size for v in values.values())
    return mapping


def make_fixture(name, model, inputs, input_names, label, opset, training_mode=torch.onnx.TrainingMode.EVAL,
                 external=False, hessian_full=False, seed=0, fold=False):
    t0 = time.time()
    out = os.path.join(HERE, name)
    shutil.rmtree(out, ignore_errors=True)  # external data is appended to, so start clean
    os.makedirs(out)
    path = os.path.join(out, "model.onnx")
    model.eval()
    example = tuple(torch.from_numpy(v[:2]) for v in inputs)
    m, notes = export(model, example, input_names, path, opset, training_mode, fold)
    if fold:
        onnx.checker.check_model(m)
        assert [i.name for i in m.graph.input] == input_names and [o.name for o in m.graph.output] == ["logits"]
        mapping = onnx_parameter_map(m, model)
        notes = [f"initializer {k} = {d}" for k, (d, _) in mapping.items()]
    else:
        verify_onnx(m, model, input_names)

    ref, m64, args64, y = reference(model, inputs, label, hessian_full)
    with torch.no_grad():
        logits32 = model(*[torch.from_numpy(v) for v in inputs]).double().numpy()
    d32 = np.max(np.abs(logits32 - ref["logits"]))
    assert d32 < 1e-4, d32
    onnx_logits = run_onnx_numpy(m, {n: v.astype(np.float64) if v.dtype.kind == "f" else v
                                     for n, v in zip(input_names, inputs)})
    donnx = np.max(np.abs(onnx_logits - ref["logits"]))
    # not exact: ONNX stores constants (sqrt(d), 1/sqrt(2), epsilons) as float32
    assert donnx < 1e-6, donnx
    if hessian_full:
        H = ref["hessian_full"]
        assert np.max(np.abs(H - H.T)) < 1e-12
        Hc = logreg_closed_form_hessian(model, inputs[0], label)
        assert np.max(np.abs(H - Hc)) < 1e-12, np.max(np.abs(H - Hc))
        assert np.array_equal(np.diag(H), np.concatenate([ref["hdiag/fc.weight"].ravel(), ref["hdiag/fc.bias"]]))
    wg, wh, nshrunk = fd_checks(m64, args64, y, ref, np.random.RandomState(seed))
    if fold:  # reference values under the initializers' names
        for prefix in ("grad/", "hdiag/"):
            by_param = {n: ref.pop(prefix + n) for n, _ in model.named_parameters()}
            for init, (_, f) in mapping.items():
                ref[prefix + init] = np.ascontiguousarray(f(by_param))

    if external:
        onnx.save_model(m, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location="model.onnx.data", size_threshold=0)
        for t in onnx.load(path, load_external_data=False).graph.initializer:
            assert t.data_location == onnx.TensorProto.EXTERNAL and not t.raw_data, t.name
        onnx.checker.check_model(path)
        mm = onnx.load(path)
        verify_onnx(mm, model, input_names)
    else:
        onnx.save_model(m, path)
        onnx.checker.check_model(path)

    save_npz(os.path.join(out, "data.npz"), {**dict(zip(input_names, inputs)), "label": label})
    save_npz(os.path.join(out, "reference.npz"), ref)

    nparam = sum(p.numel() for p in model.parameters())
    maxg = max(np.abs(v).max() for k, v in ref.items() if k.startswith("grad/"))
    ops = sorted({n.op_type for n in m.graph.node})
    print(f"[{name}] params={nparam} loss={float(ref['loss']):.6f} max|grad|={maxg:.4e} "
          f"|logits32-logits64|={d32:.2e} |onnx(numpy)-torch64|={donnx:.2e} "
          f"fd rel err grad<={wg:.1e} hdiag<={wh:.1e} (kink-avoiding step shrinks: {nshrunk}) time={time.time() - t0:.1f}s")
    print(f"    ops: {ops}")
    print(f"    initializers: {[t.name for t in m.graph.initializer]}")
    for n in notes:
        print(f"    export note: {n}")


# --------------------------------------------------------------------------- main


def main():
    wanted = set(sys.argv[1:])

    def want(name):
        return not wanted or name in wanted

    x, y, subset = digits()
    xs, ys = x[subset], y[subset]

    if want("logreg"):
        torch.manual_seed(1)
        np.random.seed(1)
        model = LogReg()
        acc = train(model, x, y, epochs=3, lr=0.01, seed=1)
        print(f"logreg train acc {acc:.3f}")
        make_fixture("logreg", model, [xs], ["x"], ys, opset=13, hessian_full=True, seed=1)

    if want("mlp"):
        torch.manual_seed(2)
        np.random.seed(2)
        model = MLP()
        acc = train(model, x, y, epochs=3, lr=0.01, seed=2)
        print(f"mlp train acc {acc:.3f}")
        make_fixture("mlp", model, [xs], ["x"], ys, opset=13, seed=2)

    if want("cnn"):
        torch.manual_seed(3)
        np.random.seed(3)
        model = CNN()
        ximg = x.reshape(-1, 1, 8, 8)
        acc = train(model, ximg, y, epochs=3, lr=0.005, seed=3)
        print(f"cnn train acc {acc:.3f}")
        # TrainingMode.EVAL would run the exporter's eval peephole, which folds every
        # BatchNorm into the preceding Conv (new `onnx::Conv_N` weights, BN params gone).
        # PRESERVE with the module in eval() exports the inference-form BatchNormalization.
        make_fixture("cnn", model, [ximg[subset]], ["x"], ys, opset=13,
                     training_mode=torch.onnx.TrainingMode.PRESERVE, seed=3)

    if want("transformer"):
        torch.manual_seed(4)
        np.random.seed(4)
        rng = np.random.RandomState(4)
        tok_train, lab_train = token_data(2048, rng)
        tok, lab = token_data(N_SAMPLES, rng)
        model = TinyTransformer()
        acc = train(model, tok_train, lab_train, epochs=2, lr=0.01, seed=4)
        with torch.no_grad():
            tacc = (model(torch.from_numpy(tok)).argmax(1).numpy() == lab).mean()
        print(f"transformer train acc {acc:.3f}, fixture-sample acc {tacc:.3f}")
        make_fixture("transformer", model, [tok], ["tokens"], lab, opset=17, seed=4)

    if want("mlp_external"):
        torch.manual_seed(5)
        np.random.seed(5)
        model = MLP()
        acc = train(model, x, y, epochs=3, lr=0.01, seed=5)
        print(f"mlp_external train acc {acc:.3f}")
        make_fixture("mlp_external", model, [xs], ["x"], ys, opset=13, external=True, seed=5)

    if want("charlstm"):
        torch.manual_seed(6)
        np.random.seed(6)
        rng = np.random.RandomState(6)
        tok_train, lab_train, vocab = char_data(2048, 12, rng)
        tok, lab, _ = char_data(32, 12, rng)
        model = CharLSTM(len(vocab))
        acc = train(model, tok_train, lab_train, epochs=4, lr=0.02, seed=6)
        with torch.no_grad():
            tacc = (model(torch.from_numpy(tok)).argmax(-1).numpy() == lab).mean()
        print(f"charlstm vocab {len(vocab)} {''.join(vocab)!r}: train acc {acc:.3f}, fixture-sample acc {tacc:.3f}")
        # Constant folding, as torch.onnx.export does by default: W/R/B and the transposed Linear weight are
        # initializers of their own (named by the exporter); the reference is mapped onto them.
        make_fixture("charlstm", model, [tok], ["tokens"], lab, opset=14, seed=6, fold=True)


if __name__ == "__main__":
    main()
