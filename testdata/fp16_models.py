"""Reduced-precision fixtures (issue 15): `fp16_cnn` (the digits CNN as a float16 export) and `bf16_mlp` (the mlp with its
weights stored as bfloat16 behind Cast nodes). Run: OMP_NUM_THREADS=2 /usr/bin/python3 testdata/fp16_models.py

torch 1.13 cannot trace a float16 model on the CPU (its Conv and Gemm kernels have no Half version), so `fp16_cnn` is the
float32 export of `cnn/model.onnx` rewritten as `model.half()` then `torch.onnx.export` writes it: every float initializer,
graph input and output float16, the nodes unchanged. References are float64 PyTorch of the float32-upcast model (the
float16/bfloat16 values widened exactly, inputs as the model sees them)."""
import os
import sys

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import save_npz  # noqa: E402
from models import CNN, MLP  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def bfloat16_bits(a):
    """float32 -> bfloat16 bit patterns, rounded to nearest even (as torch's .to(torch.bfloat16))."""
    u = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def ce(logits, y):
    return torch.nn.functional.cross_entropy(logits, y)


def load_weights(model, m, dtype):
    """PyTorch module with the ONNX initializers' values (named as in PyTorch) rounded to dtype, in float64."""
    init = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    state = model.state_dict()
    for k in state:
        if k in init:
            state[k] = torch.from_numpy(init[k].astype(np.float32)).to(dtype).double()
    model.load_state_dict(state)
    return model.double().eval()


def grads(model, x, y):
    loss = ce(model(x), y)
    params = list(model.named_parameters())
    g = torch.autograd.grad(loss, [p for _, p in params])
    ref = {"loss": np.array(loss.item())}
    ref.update({"grad/" + n: v.detach().numpy() for (n, _), v in zip(params, g)})
    return ref


def fp16_cnn():
    m = onnx.load(os.path.join(HERE, "cnn", "model.onnx"))
    data = np.load(os.path.join(HERE, "cnn", "data.npz"))
    for t in m.graph.initializer:
        if t.data_type == TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    for v in list(m.graph.input) + list(m.graph.output) + list(m.graph.value_info):
        if v.type.tensor_type.elem_type == TensorProto.FLOAT:
            v.type.tensor_type.elem_type = TensorProto.FLOAT16
    assert not any(n.op_type in ("Constant", "Cast") for n in m.graph.node)
    onnx.checker.check_model(m, full_check=True)
    out = os.path.join(HERE, "fp16_cnn")
    onnx.save(m, os.path.join(out, "model.onnx"))
    x16 = data["x"].astype(np.float16)
    save_npz(os.path.join(out, "data.npz"), {"x": x16, "label": data["label"]})
    # as testdata/make_examples.py does for mlp: 8 samples to unlearn, and the same samples relabelled (label + 1) mod 10
    rows = np.arange(8)
    save_npz(os.path.join(out, "forget.npz"), {"x": x16[rows], "label": data["label"][rows]})
    save_npz(os.path.join(out, "corrected.npz"), {"x": x16[rows], "label": (data["label"][rows] + 1) % 10})
    model = load_weights(CNN(), m, torch.float16)
    ref = grads(model, torch.from_numpy(x16.astype(np.float64)), torch.from_numpy(data["label"]))
    save_npz(os.path.join(out, "reference.npz"), ref)
    print("fp16_cnn loss", ref["loss"])


def bf16_mlp():
    """mlp's weights as bfloat16 initializers (fc1.*) and a bfloat16 Constant node (fc2.bias), each read through
    Cast(to=float), as exporters write weights kept in bfloat16 under a float32 graph. Input and output stay float32."""
    src = onnx.load(os.path.join(HERE, "mlp", "model.onnx"))
    data = np.load(os.path.join(HERE, "mlp", "data.npz"))
    w = {t.name: numpy_helper.to_array(t) for t in src.graph.initializer}
    inits, nodes, names, stored = [], [], {}, {}
    for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
        bits = bfloat16_bits(w[name])
        t = helper.make_tensor(name, TensorProto.BFLOAT16, w[name].shape, bits.tobytes(), raw=True)
        stored[name] = (bits.astype(np.uint32) << 16).view(np.float32).reshape(w[name].shape)
        if name == "fc2.bias":
            nodes.append(helper.make_node("Constant", [], [name], name="fc2.bias_const", value=t))
        else:
            inits.append(t)
        nodes.append(helper.make_node("Cast", [name], [name + "_f32"], name=name + "_cast", to=TensorProto.FLOAT))
        names[name] = name + "_f32"
    nodes += [
        helper.make_node("Gemm", ["x", names["fc1.weight"], names["fc1.bias"]], ["h1"], name="fc1", transB=1),
        helper.make_node("Relu", ["h1"], ["r1"], name="relu"),
        helper.make_node("Gemm", ["r1", names["fc2.weight"], names["fc2.bias"]], ["logits"], name="fc2", transB=1),
    ]
    g = helper.make_graph(nodes, "bf16_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="fp16_models.py")
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    out = os.path.join(HERE, "bf16_mlp")
    onnx.save(m, os.path.join(out, "model.onnx"))
    save_npz(os.path.join(out, "data.npz"), {"x": data["x"], "label": data["label"]})
    model = MLP()
    state = model.state_dict()
    for k in state:
        state[k] = torch.from_numpy(stored[k].copy())
    model.load_state_dict(state)
    model = model.double().eval()
    ref = grads(model, torch.from_numpy(data["x"].astype(np.float64)), torch.from_numpy(data["label"]))
    save_npz(os.path.join(out, "reference.npz"), ref)
    print("bf16_mlp loss", ref["loss"])


if __name__ == "__main__":
    torch.manual_seed(0)
    fp16_cnn()
    bf16_mlp()
