"""Source model of the ort_postln fixture: a post-LayerNorm transformer block (BERT order), written so that ONNX Runtime's
optimizer at level extended fuses it into com.microsoft ops (see testdata/README.md). Writes source.onnx and data.npz;
tests/Autodiff/OrtOptimizedFixtureTests.cs turns source.onnx into model.onnx.

    OMP_NUM_THREADS=2 /usr/bin/python3 testdata/ort_postln/generate.py
"""
import os
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from common import save_npz  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
N, T, H, C = 32, 6, 8, 3


class PostLN(nn.Module):
    """h = LN(x + attn(x)); h = LN(h + fc2(gelu(fc1(h)))); logits = head(gelu_tanh(fc3(h)).mean(1)). Each residual sum
    feeds only its LayerNorm (SkipLayerNormalization fuses only then); GELU erf → BiasGelu, tanh → FastGelu."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(H, H) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(H), nn.LayerNorm(H)
        self.fc1, self.fc2, self.fc3 = nn.Linear(H, 16), nn.Linear(16, H), nn.Linear(H, H)
        self.head = nn.Linear(H, C)

    def forward(self, x):
        a = torch.softmax(self.q(x) @ self.k(x).transpose(-1, -2) / H ** 0.5, dim=-1) @ self.v(x)
        h = self.ln1(x + self.o(a))
        h = self.ln2(h + self.fc2(nn.functional.gelu(self.fc1(h))))
        return self.head(nn.functional.gelu(self.fc3(h), approximate="tanh").mean(1))


def main():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, T, H)).astype(np.float32)
    label = (x[:, :, :3].sum(axis=(1, 2)) > 0).astype(np.int64) + (x[:, :, 3].sum(axis=1) > 1).astype(np.int64)
    model = PostLN().eval()
    with torch.no_grad():  # LayerNorms away from their initial 1 and 0 (equal tensors would be exported as one)
        for ln in (model.ln1, model.ln2):
            ln.weight.add_(0.2 * torch.randn(H))
            ln.bias.add_(0.2 * torch.randn(H))
    # Names as PyTorch has them; dim 0 symbolic (the skip-layer-norm fusion needs the other dims fixed).
    torch.onnx.export(model, torch.from_numpy(x[:2]), os.path.join(HERE, "source.onnx"), input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}}, opset_version=17,
                      do_constant_folding=True)
    save_npz(os.path.join(HERE, "data.npz"), {"x": x, "label": label})


if __name__ == "__main__":
    main()
