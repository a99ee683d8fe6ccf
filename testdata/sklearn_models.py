#!/usr/bin/python3
"""scikit-learn models in the ONNX form skl2onnx writes them, with float64 reference gradients.

Run with Debian's python (python3-sklearn 1.2, python3-onnx 1.12, python3-torch 1.13; skl2onnx itself is not needed):

    OMP_NUM_THREADS=2 /usr/bin/python3 testdata/sklearn_models.py

(byte-identical output with 2 threads; the lbfgs fit's last digits depend on BLAS's thread count).

The graphs are written with the onnx API in the shape skl2onnx (1.14+) gives them, so that the fixtures do not depend
on a converter version being installed:
  LogisticRegression (multinomial):  X -> LinearClassifier(post_transform SOFTMAX) -> label, probability_tensor
                                     probability_tensor -> Normalizer(norm L1) -> probabilities
                                     probabilities -> ZipMap -> output_probability  (seq(map(int64, float)); default)
  LogisticRegression (one-vs-rest):  the same with post_transform LOGISTIC: the probabilities are σ(z)/Σσ(z).
  LinearRegression:                  X -> LinearRegressor -> variable [N, 1]

testdata/skl_logreg/ (digits /16, the 64 samples the other digits fixtures use; models trained on all 1797):
  model.onnx        multinomial, ZipMap (skl2onnx's default): outputs label, output_probability
  nozipmap.onnx     multinomial, options={'zipmap': False}: outputs label, probabilities
  ovr.onnx          one-vs-rest (liblinear), zipmap False: outputs label, probabilities
  data.npz          X float32 [64, 64], label int64 [64]
  reference.npz     loss, grad/LinearClassifier.coefficients [10, 64], grad/LinearClassifier.intercepts [10]: the mean
                    cross-entropy −log probabilities[label] of model.onnx / nozipmap.onnx (same weights), and
                    ovr/loss, ovr/grad/... for ovr.onnx; float64, by torch autograd through the graph's own formulas
                    (Normalizer included), checked against the closed forms.
testdata/skl_linreg/ (sklearn's diabetes data, first 64 samples; model trained on all 442):
  model.onnx        LinearRegressor 'LinearRegressor' (10 features, 1 target): output variable [N, 1]
  data.npz          X float32 [64, 10], label float32 [64, 1] (the targets)
  reference.npz     loss, grad/LinearRegressor.coefficients [1, 10], grad/LinearRegressor.intercepts [1] of the mean
                    squared error.
"""
import os

import numpy as np
import onnx
import torch
from onnx import helper, TensorProto
from sklearn.datasets import load_diabetes, load_digits
from sklearn.linear_model import LinearRegression, LogisticRegression

from common import save_npz

HERE = os.path.dirname(os.path.abspath(__file__))
N = 64
ML = "ai.onnx.ml"
OPSETS = [helper.make_opsetid("", 15), helper.make_opsetid(ML, 1)]


def model(nodes, inputs, outputs, name):
    m = helper.make_model(helper.make_graph(nodes, name, inputs, outputs), opset_imports=OPSETS,
                          producer_name="skl2onnx", producer_version="1.16.0")
    m.ir_version = 8
    onnx.checker.check_model(m)  # (onnx 1.12 cannot shape-infer through ZipMap's map type: no full_check)
    return m


def classifier(w, b, post, zipmap):
    """A LogisticRegression as skl2onnx writes it; w [C, F] and b [C] are float32."""
    classes, features = w.shape
    nodes = [
        helper.make_node("LinearClassifier", ["X"], ["label", "probability_tensor"], name="LinearClassifier", domain=ML,
                         coefficients=w.reshape(-1).tolist(), intercepts=b.tolist(),
                         classlabels_ints=list(range(classes)), multi_class=1 if post == "SOFTMAX" else 0,
                         post_transform=post),
        helper.make_node("Normalizer", ["probability_tensor"], ["probabilities"], name="Normalizer", domain=ML, norm="L1"),
    ]
    outputs = [helper.make_tensor_value_info("label", TensorProto.INT64, [None])]
    if zipmap:
        nodes.append(helper.make_node("ZipMap", ["probabilities"], ["output_probability"], name="ZipMap", domain=ML,
                                      classlabels_int64s=list(range(classes))))
        # seq(map(int64, tensor(float))) (onnx 1.12's helper has no make_map_type_proto)
        entry = onnx.TypeProto()
        entry.map_type.key_type = TensorProto.INT64
        entry.map_type.value_type.CopyFrom(helper.make_tensor_type_proto(TensorProto.FLOAT, None))
        seq = helper.make_sequence_type_proto(entry)
        outputs.append(helper.make_value_info("output_probability", seq))
    else:
        outputs.append(helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, classes]))
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, features])]
    return model(nodes, inputs, outputs, "LogisticRegression")


def regressor(w, b):
    node = helper.make_node("LinearRegressor", ["X"], ["variable"], name="LinearRegressor", domain=ML,
                            coefficients=w.reshape(-1).tolist(), intercepts=b.tolist(), targets=1)
    return model([node], [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, w.shape[1]])],
                 [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])], "LinearRegression")


def classifier_reference(x, y, w, b, post):
    """Mean −log probabilities[label] and its gradient, float64, through the graph's formulas (torch autograd)."""
    W = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    B = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    z = torch.from_numpy(x.astype(np.float64)) @ W.T + B
    p = torch.softmax(z, 1) if post == "SOFTMAX" else torch.sigmoid(z)
    p = p / p.abs().sum(1, keepdim=True)  # Normalizer L1 (ONNX Runtime divides by Σ|x|)
    loss = -torch.log(p[torch.arange(len(y)), torch.from_numpy(y)]).mean()
    loss.backward()
    # Closed forms: softmax: dℓ/dz = (p − onehot)/N; one-vs-rest: p = softmax(log σ(z)), dℓ/dz = (p − onehot)·σ(−z)/N.
    z = z.detach().numpy()
    onehot = np.eye(w.shape[0])[y]
    if post == "SOFTMAX":
        e = np.exp(z - z.max(1, keepdims=True)); q = e / e.sum(1, keepdims=True); dz = (q - onehot) / len(y)
    else:
        u = -np.logaddexp(0, -z); e = np.exp(u - u.max(1, keepdims=True)); q = e / e.sum(1, keepdims=True)
        dz = (q - onehot) * (1 / (1 + np.exp(z))) / len(y)
    gw, gb = dz.T @ x.astype(np.float64), dz.sum(0)
    assert np.allclose(gw, W.grad.numpy(), rtol=1e-10, atol=1e-13) and np.allclose(gb, B.grad.numpy(), rtol=1e-10, atol=1e-13)
    return float(loss), W.grad.numpy(), B.grad.numpy()


def write(folder, files):
    out = os.path.join(HERE, folder)
    os.makedirs(out, exist_ok=True)
    for name, content in files.items():
        path = os.path.join(out, name)
        if name.endswith(".onnx"):
            with open(path, "wb") as f: f.write(content.SerializeToString())
        else:
            save_npz(path, content)


def logreg():
    d = load_digits()
    x_all = (d.data / 16.0).astype(np.float32)
    y_all = d.target.astype(np.int64)
    subset = np.sort(np.random.RandomState(0).permutation(len(y_all))[:N])  # as generate.py's digits()
    x, y = x_all[subset], y_all[subset]
    multi = LogisticRegression(C=1.0, max_iter=2000).fit(x_all, y_all)  # lbfgs: multinomial
    ovr = LogisticRegression(C=1.0, solver="liblinear", multi_class="ovr").fit(x_all, y_all)
    files, ref = {}, {}
    for key, clf, post in [("", multi, "SOFTMAX"), ("ovr/", ovr, "LOGISTIC")]:
        w, b = clf.coef_.astype(np.float32), clf.intercept_.astype(np.float32)
        loss, gw, gb = classifier_reference(x, y, w, b, post)
        # The float64 forward agrees with sklearn's own probabilities (computed from the float64 weights).
        z = x.astype(np.float64) @ w.T.astype(np.float64) + b
        p = np.exp(z - z.max(1, keepdims=True)) if post == "SOFTMAX" else 1 / (1 + np.exp(-z))
        p /= p.sum(1, keepdims=True)
        assert np.max(np.abs(p - clf.predict_proba(x))) < 1e-5
        ref.update({key + "loss": np.float64(loss), key + "grad/LinearClassifier.coefficients": gw,
                    key + "grad/LinearClassifier.intercepts": gb})
        print(f"skl_logreg {post}: train acc {clf.score(x_all, y_all):.3f}, loss on the 64 samples {loss:.4f}")
        if post == "SOFTMAX":
            files["model.onnx"] = classifier(w, b, post, zipmap=True)
            files["nozipmap.onnx"] = classifier(w, b, post, zipmap=False)
        else:
            files["ovr.onnx"] = classifier(w, b, post, zipmap=False)
    files["data.npz"] = {"X": x, "label": y}
    files["reference.npz"] = ref
    write("skl_logreg", files)


def linreg():
    d = load_diabetes()
    x_all, t_all = d.data.astype(np.float32), d.target.astype(np.float32)
    reg = LinearRegression().fit(x_all, t_all)
    w, b = reg.coef_.astype(np.float32).reshape(1, -1), np.array([reg.intercept_], dtype=np.float32)
    x, t = x_all[:N], t_all[:N].reshape(-1, 1)
    r = x.astype(np.float64) @ w.T.astype(np.float64) + b - t  # residuals [N, 1]
    loss = float(np.mean(r * r))
    gw, gb = 2 * r.T @ x.astype(np.float64) / N, 2 * r.sum(0) / N
    print(f"skl_linreg: R² {reg.score(x_all, t_all):.3f}, mse on the 64 samples {loss:.1f}")
    write("skl_linreg", {"model.onnx": regressor(w, b), "data.npz": {"X": x, "label": t},
                         "reference.npz": {"loss": np.float64(loss), "grad/LinearRegressor.coefficients": gw,
                                           "grad/LinearRegressor.intercepts": gb}})


if __name__ == "__main__":
    logreg()
    linreg()
