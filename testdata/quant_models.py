"""Quantized fixture (issue 15, point 2): `qdq_mlp`, the digits MLP (mlp/model.onnx) in ONNX Runtime's QDQ format, as its
static quantizer writes it: fc1.weight int8 per channel (axis 0, zero points 0), fc2.weight uint8 per tensor (zero point
128), the biases float, and QuantizeLinear/DequantizeLinear pairs (uint8) on the input and on the hidden activation.
Scales are those of a symmetric (weights) / min-max (activations over mlp/data.npz) calibration.
`dynq_mlp`: the same MLP in ONNX Runtime's dynamic quantization form (its quantize_dynamic writes MatMul this way): each
layer is DynamicQuantizeLinear(activation) → MatMulInteger(x_q, W_q, x_zp, w_zp) → Cast to float → Mul by
Mul(x_scale, w_scale) → Add bias. W_q is [in, out]: fc1 int8 per output column (zero points 0), fc2 uint8 per tensor
(zero point 128).
Run: /usr/bin/python3 testdata/quant_models.py"""
import os
import shutil

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))


def quantize(w, scale, zp, lo, hi, axis=None):
    s = scale if axis is None else scale.reshape([-1] + [1] * (w.ndim - 1))
    z = zp if axis is None else zp.reshape([-1] + [1] * (w.ndim - 1))
    return np.clip(np.rint(w / s) + z, lo, hi)


def activation_scale(x):
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = np.float32((hi - lo) / 255.0)
    zp = np.uint8(np.clip(np.rint(-lo / scale), 0, 255))
    return scale, zp


def qdq_mlp():
    m = onnx.load(os.path.join(HERE, "mlp", "model.onnx"))
    data = np.load(os.path.join(HERE, "mlp", "data.npz"))
    init = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    w1, w2 = init["fc1.weight"], init["fc2.weight"]
    s1 = (np.abs(w1).max(axis=1) / 127.0).astype(np.float32)
    q1 = quantize(w1, s1, np.zeros(32), -128, 127, axis=0).astype(np.int8)
    s2 = np.float32(np.abs(w2).max() / 127.0)
    q2 = quantize(w2, s2, 128, 0, 255).astype(np.uint8)
    x = data["x"]
    sx, zx = activation_scale(x)
    h = np.maximum(x @ w1.T + init["fc1.bias"], 0)
    sh, zh = activation_scale(h)

    inits = [
        numpy_helper.from_array(q1, "fc1.weight_quantized"), numpy_helper.from_array(s1, "fc1.weight_scale"),
        numpy_helper.from_array(np.zeros(32, np.int8), "fc1.weight_zero_point"),
        numpy_helper.from_array(q2, "fc2.weight_quantized"), numpy_helper.from_array(np.array(s2), "fc2.weight_scale"),
        numpy_helper.from_array(np.array(np.uint8(128)), "fc2.weight_zero_point"),
        numpy_helper.from_array(init["fc1.bias"], "fc1.bias"), numpy_helper.from_array(init["fc2.bias"], "fc2.bias"),
        numpy_helper.from_array(np.array(sx), "x_scale"), numpy_helper.from_array(np.array(zx), "x_zero_point"),
        numpy_helper.from_array(np.array(sh), "relu_scale"), numpy_helper.from_array(np.array(zh), "relu_zero_point"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero_point"], ["x_quantized"], name="x_QuantizeLinear"),
        helper.make_node("DequantizeLinear", ["x_quantized", "x_scale", "x_zero_point"], ["x_dequantized"], name="x_DequantizeLinear"),
        helper.make_node("DequantizeLinear", ["fc1.weight_quantized", "fc1.weight_scale", "fc1.weight_zero_point"], ["fc1.weight_dequantized"],
                         name="fc1.weight_DequantizeLinear", axis=0),
        helper.make_node("Gemm", ["x_dequantized", "fc1.weight_dequantized", "fc1.bias"], ["/fc1/Gemm_output_0"], name="/fc1/Gemm", transB=1),
        helper.make_node("Relu", ["/fc1/Gemm_output_0"], ["/relu/Relu_output_0"], name="/relu/Relu"),
        helper.make_node("QuantizeLinear", ["/relu/Relu_output_0", "relu_scale", "relu_zero_point"], ["relu_quantized"], name="relu_QuantizeLinear"),
        helper.make_node("DequantizeLinear", ["relu_quantized", "relu_scale", "relu_zero_point"], ["relu_dequantized"], name="relu_DequantizeLinear"),
        helper.make_node("DequantizeLinear", ["fc2.weight_quantized", "fc2.weight_scale", "fc2.weight_zero_point"], ["fc2.weight_dequantized"],
                         name="fc2.weight_DequantizeLinear"),
        helper.make_node("Gemm", ["relu_dequantized", "fc2.weight_dequantized", "fc2.bias"], ["logits"], name="/fc2/Gemm", transB=1),
    ]
    g = helper.make_graph(nodes, "qdq_mlp", list(m.graph.input), list(m.graph.output), inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="onnx-unlearn quant_models.py")
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    out = os.path.join(HERE, "qdq_mlp")
    os.makedirs(out, exist_ok=True)
    onnx.save(model, os.path.join(out, "model.onnx"))
    for f in ("data.npz", "forget.npz", "corrected.npz"):
        shutil.copy(os.path.join(HERE, "mlp", f), os.path.join(out, f))


def dynq_mlp():
    m = onnx.load(os.path.join(HERE, "mlp", "model.onnx"))
    init = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    w1, w2 = init["fc1.weight"].T.copy(), init["fc2.weight"].T.copy()  # [in, out], as MatMul reads them
    s1 = (np.abs(w1).max(axis=0) / 127.0).astype(np.float32)
    q1 = np.clip(np.rint(w1 / s1), -128, 127).astype(np.int8)
    s2 = np.float32(np.abs(w2).max() / 127.0)
    q2 = quantize(w2, s2, 128, 0, 255).astype(np.uint8)
    inits = [
        numpy_helper.from_array(q1, "fc1.weight_quantized"), numpy_helper.from_array(s1, "fc1.weight_scale"),
        numpy_helper.from_array(np.zeros(32, np.int8), "fc1.weight_zero_point"),
        numpy_helper.from_array(q2, "fc2.weight_quantized"), numpy_helper.from_array(np.array(s2), "fc2.weight_scale"),
        numpy_helper.from_array(np.array(np.uint8(128)), "fc2.weight_zero_point"),
        numpy_helper.from_array(init["fc1.bias"], "fc1.bias"), numpy_helper.from_array(init["fc2.bias"], "fc2.bias"),
    ]

    def layer(x, name, out):
        return [
            helper.make_node("DynamicQuantizeLinear", [x], [x + "_quantized", x + "_scale", x + "_zero_point"], name=x + "_QuantizeLinear"),
            helper.make_node("MatMulInteger", [x + "_quantized", name + ".weight_quantized", x + "_zero_point", name + ".weight_zero_point"],
                             [name + "_MatMul_output_quantized"], name=name + "_MatMul_quant"),
            helper.make_node("Mul", [x + "_scale", name + ".weight_scale"], [name + "_MatMul_quant_scales_mul:0"], name=name + "_MatMul_quant_scales_mul"),
            helper.make_node("Cast", [name + "_MatMul_output_quantized"], [name + "_MatMul_output_quantized_cast_output"],
                             name=name + "_MatMul_output_quantized_cast", to=TensorProto.FLOAT),
            helper.make_node("Mul", [name + "_MatMul_output_quantized_cast_output", name + "_MatMul_quant_scales_mul:0"], [name + "_MatMul_output_0"],
                             name=name + "_MatMul_quant_output_scale_mul"),
            helper.make_node("Add", [name + "_MatMul_output_0", name + ".bias"], [out], name=name + "_Add"),
        ]

    nodes = layer("x", "fc1", "/fc1/Gemm_output_0") + [helper.make_node("Relu", ["/fc1/Gemm_output_0"], ["/relu/Relu_output_0"], name="/relu/Relu")] \
        + layer("/relu/Relu_output_0", "fc2", "logits")
    g = helper.make_graph(nodes, "dynq_mlp", list(m.graph.input), list(m.graph.output), inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], producer_name="onnx-unlearn quant_models.py")
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    out = os.path.join(HERE, "dynq_mlp")
    os.makedirs(out, exist_ok=True)
    onnx.save(model, os.path.join(out, "model.onnx"))
    for f in ("data.npz", "forget.npz", "corrected.npz"):
        shutil.copy(os.path.join(HERE, "mlp", f), os.path.join(out, f))


if __name__ == "__main__":
    qdq_mlp()
    dynq_mlp()
