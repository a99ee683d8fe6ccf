#!/usr/bin/python3
"""Generate the canary experiment of docs/benchmarks/canary.md: a character-level language model that memorised a credit-card
number, the same model retrained without it, and the files of the unlearning request.

Run with Debian's python (python3-torch 1.13, python3-onnx), CPU only; deterministic:

    /usr/bin/python3 testdata/experiments/canary.py [data] [lstm] [transformer]

Text: every license text Debian ships in /usr/share/common-licenses (base-files; ~250 KB of English), lowercased, each
run of whitespace made one space, characters outside a small alphabet dropped. It is cut into 2,000-character chunks;
every 10th chunk is held out (perplexity), the rest is the training text.

Canary: "my credit card number is 4929 5173 0826 3307. " inserted K = 16 times into the training text at seeded
sentence boundaries. The retrained model is trained on the same training text without the insertions, from the same
initial weights, with the same settings (its windows are the canary text's windows less the 23 that the insertions add).

Windows (as `onnx-unlearn text2npz --window 64 --stride 32` cuts them): T = 64 input characters, labels = the next
characters; a window every 32 characters. Training uses all windows, shuffled each epoch.

canary/ (shared by both architectures)
  vocab.json      character -> token id
  train.npz       a seeded sample of 512 training windows (keys tokens, label): the sample that defines the Hessian and
                  the retain loss; the full training set has meta.json's train_windows windows (--train-size)
  forget.npz      Z: every training window that contains the whole secret (text2npz --match)
  corrected.npz   Z~: the same windows with the secret's 16 digits replaced by random digits (fresh per occurrence)
  heldout.npz     the held-out text in non-overlapping windows of 64 (perplexity = exp(mean cross-entropy))
  meta.json       text, K, sizes, training settings and wall times
canary/<arch>/canary.onnx, retrained.onnx   input tokens int64 [N, T] (N, T dynamic), output logits [N, T, V]
Architectures: lstm         Embedding(V,32) -> LSTM(32,128) -> Linear(128,V)   (ONNX LSTM op, opset 14)
               transformer  token + learned position embeddings (64) -> 2 pre-LayerNorm blocks (4-head causal
                            self-attention, MLP 64-256-64 GELU) -> LayerNorm -> Linear(64,V)   (opset 14)
"""
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from common import save_npz  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
torch.use_deterministic_algorithms(True)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "canary")
LICENSES = "/usr/share/common-licenses"
ALPHABET = set("abcdefghijklmnopqrstuvwxyz0123456789 .,;:'\"()-!?/")
PREFIX = "my credit card number is "
SECRET = "4929 5173 0826 3307"
K = 16
T, STRIDE = 64, 32
TRAIN_SAMPLE = 512
SEED = 2026
EPOCHS = {"lstm": 14, "transformer": 8}
LR = {"lstm": 4e-3, "transformer": 3e-3}


def load_text():
    parts = []
    for name in sorted(os.listdir(LICENSES)):
        path = os.path.join(LICENSES, name)
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            parts.append(f.read())
    text = " ".join(" ".join(p.lower().split()) for p in parts)
    return "".join(c for c in text if c in ALPHABET), sorted(n for n in os.listdir(LICENSES) if not os.path.islink(os.path.join(LICENSES, n)))


def split(text):
    chunks = [text[i:i + 2000] for i in range(0, len(text), 2000)]
    return "".join(c for i, c in enumerate(chunks) if i % 10 != 9), "".join(c for i, c in enumerate(chunks) if i % 10 == 9)


def insert_canaries(text, rng):
    """The training text with the canary sentence after K seeded sentence ends; also the same text with random digits."""
    ends = [i + 2 for i in range(len(text) - 2) if text[i:i + 2] == ". "]
    at = sorted(rng.choice(ends, K, replace=False))
    with_secret, scrambled, last = [], [], 0
    for p in at:
        with_secret += [text[last:p], PREFIX + SECRET + ". "]
        fake = "".join(str(rng.randint(10)) if c.isdigit() else c for c in SECRET)
        scrambled += [text[last:p], PREFIX + fake + ". "]
        last = p
    with_secret.append(text[last:]); scrambled.append(text[last:])
    return "".join(with_secret), "".join(scrambled)


def windows(ids, stride):
    starts = np.arange(0, len(ids) - T, stride)
    idx = starts[:, None] + np.arange(T)[None, :]
    return ids[idx], ids[idx + 1], starts


class CharLstm(nn.Module):
    def __init__(self, v):
        super().__init__()
        self.embed = nn.Embedding(v, 32)
        self.lstm = nn.LSTM(32, 128, batch_first=True)
        self.fc = nn.Linear(128, v)

    def forward(self, tokens):
        return self.fc(self.lstm(self.embed(tokens))[0])


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.reshape(n, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        s = q @ k.transpose(2, 3) / (d // self.heads) ** 0.5
        causal = torch.ones(t, t, dtype=torch.bool).triu(1)
        a = s.masked_fill(causal, -1e9).softmax(-1) @ v
        x = x + self.proj(a.transpose(1, 2).reshape(n, t, d))
        return x + self.mlp(self.ln2(x))


class TinyGpt(nn.Module):
    def __init__(self, v, d=64, heads=4, layers=2):
        super().__init__()
        self.embed = nn.Embedding(v, d)
        self.pos = nn.Parameter(torch.randn(T, d) * 0.02)
        self.blocks = nn.Sequential(*[Block(d, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)
        self.fc = nn.Linear(d, v)

    def forward(self, tokens):
        return self.fc(self.ln(self.blocks(self.embed(tokens) + self.pos[:tokens.shape[1]])))


def train(arch, v, x, y, seed):
    torch.manual_seed(seed)
    model = {"lstm": CharLstm, "transformer": TinyGpt}[arch](v)
    opt = torch.optim.Adam(model.parameters(), LR[arch])
    steps = EPOCHS[arch] * ((len(x) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, LR[arch], total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    clock = time.time()
    for epoch in range(EPOCHS[arch]):
        order = torch.randperm(len(x), generator=g)
        total = 0.0
        for b in range(0, len(x), 64):
            i = order[b:b + 64]
            loss = F.cross_entropy(model(xt[i]).reshape(-1, v), yt[i].reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(i)
        print(f"  {arch} epoch {epoch + 1}: train loss {total / len(x):.4f} ({time.time() - clock:.0f} s)", flush=True)
    return model.eval(), time.time() - clock


def export(model, path):
    example = torch.zeros(2, T, dtype=torch.int64)
    torch.onnx.export(model, (example,), path, input_names=["tokens"], output_names=["logits"], opset_version=14,
                      dynamic_axes={"tokens": {0: "N", 1: "T"}, "logits": {0: "N", 1: "T"}})
    onnx.checker.check_model(onnx.load(path))


def perplexity(model, x, y, v):
    with torch.no_grad():
        return float(torch.exp(F.cross_entropy(model(torch.from_numpy(x)).reshape(-1, v), torch.from_numpy(y).reshape(-1))))


def secret_nll(model, ids):
    """Negative log-likelihood (nats) of the secret's digits after the prefix."""
    s = np.array([ids[c] for c in PREFIX + SECRET])[None, :]
    with torch.no_grad():
        lp = F.log_softmax(model(torch.from_numpy(s[:, :-1])), -1)[0]
    pos = [len(PREFIX) + i for i, c in enumerate(SECRET) if c.isdigit()]
    return float(-sum(lp[p - 1, s[0, p]] for p in pos))


def data():
    os.makedirs(OUT, exist_ok=True)
    text, sources = load_text()
    train_text, held_text = split(text)
    rng = np.random.RandomState(SEED)
    with_secret, scrambled = insert_canaries(train_text, rng)
    chars = sorted(set(text) | set(PREFIX + SECRET))
    vocab = {c: i for i, c in enumerate(chars)}
    enc = lambda s: np.array([vocab[c] for c in s], dtype=np.int64)  # noqa: E731
    x, y, starts = windows(enc(with_secret), STRIDE)
    xs, ys, _ = windows(enc(scrambled), STRIDE)
    xc, yc, _ = windows(enc(train_text), STRIDE)
    hx, hy, _ = windows(enc(held_text), T)
    occ = [i for i in range(len(with_secret)) if with_secret.startswith(SECRET, i)]
    z = np.array([i for i, s in enumerate(starts) if any(s <= p and p + len(SECRET) <= s + T + 1 for p in occ)])
    sample = np.sort(np.random.RandomState(SEED + 1).choice(len(x), TRAIN_SAMPLE, replace=False))
    with open(os.path.join(OUT, "vocab.json"), "w") as f:
        json.dump(vocab, f, indent=0, ensure_ascii=False)
    save_npz(os.path.join(OUT, "train.npz"), {"tokens": x[sample], "label": y[sample]})
    save_npz(os.path.join(OUT, "forget.npz"), {"tokens": x[z], "label": y[z]})
    save_npz(os.path.join(OUT, "corrected.npz"), {"tokens": xs[z], "label": ys[z]})
    save_npz(os.path.join(OUT, "heldout.npz"), {"tokens": hx, "label": hy})
    meta = {"text": f"{LICENSES}/{{{','.join(sources)}}}", "text_characters": len(text), "train_characters": len(train_text),
            "heldout_characters": len(held_text), "vocabulary": len(vocab), "prefix": PREFIX, "secret": SECRET, "insertions": K,
            "window": T, "stride": STRIDE, "train_windows": len(x), "retrain_windows": len(xc), "forget_windows": len(z),
            "heldout_windows": len(hx), "train_sample": TRAIN_SAMPLE, "seed": SEED}
    np.savez(os.path.join(OUT, "full.npz"), x=x, y=y, xc=xc, yc=yc, hx=hx, hy=hy)  # not committed: the full training sets
    write_meta(meta)
    print(json.dumps(meta, indent=1))


def write_meta(update):
    path = os.path.join(OUT, "meta.json")
    meta = json.load(open(path)) if os.path.exists(path) else {}
    meta.update(update)
    with open(path, "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


def models(arch):
    full = np.load(os.path.join(OUT, "full.npz"))
    vocab = json.load(open(os.path.join(OUT, "vocab.json")))
    v = len(vocab)
    os.makedirs(os.path.join(OUT, arch), exist_ok=True)
    result = {}
    for name, (x, y) in {"canary": (full["x"], full["y"]), "retrained": (full["xc"], full["yc"])}.items():
        model, seconds = train(arch, v, x, y, SEED + 2)
        export(model, os.path.join(OUT, arch, f"{name}.onnx"))
        result[name] = {"train_seconds": round(seconds, 1), "heldout_perplexity": round(perplexity(model, full["hx"], full["hy"], v), 4),
                        "secret_nll_nats": round(secret_nll(model, vocab), 3)}
        print(arch, name, result[name], flush=True)
    write_meta({arch: {"epochs": EPOCHS[arch], "lr": LR[arch], "batch": 64, "threads": torch.get_num_threads(),
                       "parameters": sum(p.numel() for p in model.parameters()), **result}})


if __name__ == "__main__":
    for step in sys.argv[1:] or ["data", "lstm", "transformer"]:
        data() if step == "data" else models(step)
