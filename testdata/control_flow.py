"""If nodes the data decides (issue 15): a Silero-VAD-like detector and an optimum-style merged decoder.

Written with the onnx helper (no torch): /usr/bin/python3 testdata/control_flow.py. Outputs are committed; tests never run it.

- vad_if/model.onnx: inputs `input` float [batch, 16], `state` float [2, batch, 4] (samples on axis 1), `sr` int64 rank 0.
  Equal(sr, 16000) picks the then_branch (16 kHz) or the else_branch (8 kHz); each computes
  z = tanh(input·W1 + b1 + state[0]·U), prob = sigmoid(z·Wo + bo) [batch, 1], state_out = [z, state[0]] [2, batch, 4].
  The then_branch keeps every weight in Constant nodes; the else_branch keeps W1 as an initializer of the branch
  subgraph and the rest as Constants. Both branches use the same names (W1, b1, U, Wo, bo).
  data.npz: `input` [12, 16], `state` [2, 12, 4], `sr` = 16000 (rank 0), `label` [12, 1] float 0/1; data8k.npz the same
  with `sr` = 8000; forget.npz its first 3 samples (16 kHz). per_sample.onnx: the same branches under a condition that varies per sample (ReduceMean(input) > 0).
  lstm.onnx: the same If on `sr` whose branches run an ONNX LSTM (input [batch, 6] as 3 steps of 2 features, (h0, c0) =
  state [2, batch, 4], weights W, R, B, Wo in Constants), as Silero's exports do; lstm_data.npz: 7 samples.
- merged_decoder/model.onnx: optimum's merged decoder in miniature: the whole graph is one If on `use_cache_branch`
  bool [1]; both branches read the outer initializers `embed` [11, 4] and `lm_head` [4, 11]: then_branch
  logits = Gather(embed, input_ids)·lm_head, else_branch the same scaled by a branch Constant `scale` [1].
  `input_ids` int64 [batch_size, sequence_length]; output `logits` [batch_size, sequence_length, 11].
  data.npz: `input_ids` [10, 5], `use_cache_branch` = [False] (shape [1]), `label` [10, 5] int64 (next tokens);
  forget.npz its first 3 samples.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import save_npz  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
T, H = 16, 4


def const(name, value):
    return helper.make_node("Constant", [], [name], name=name + "_const", value=numpy_helper.from_array(value.astype(np.float32), name))


def vad_branch(name, rng, weights_as_initializer):
    w = {"W1": rng.normal(0, 0.4, (T, H)), "b1": rng.normal(0, 0.1, (H,)), "U": rng.normal(0, 0.4, (H, H)),
         "Wo": rng.normal(0, 0.6, (H, 1)), "bo": rng.normal(0, 0.1, (1,))}
    nodes, inits = [], []
    for k, v in w.items():
        if k == "W1" and weights_as_initializer:
            inits.append(numpy_helper.from_array(v.astype(np.float32), k))
        else:
            nodes.append(const(k, v))
    nodes += [
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.int64), "zero")),
        helper.make_node("Constant", [], ["axis0"], value=numpy_helper.from_array(np.array([0], np.int64), "axis0")),
        helper.make_node("Gather", ["state", "zero"], ["h"], axis=0),
        helper.make_node("MatMul", ["input", "W1"], ["xw"]),
        helper.make_node("Add", ["xw", "b1"], ["xwb"]),
        helper.make_node("MatMul", ["h", "U"], ["hu"]),
        helper.make_node("Add", ["xwb", "hu"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["z"]),
        helper.make_node("MatMul", ["z", "Wo"], ["zo"]),
        helper.make_node("Add", ["zo", "bo"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["prob"]),
        helper.make_node("Unsqueeze", ["z", "axis0"], ["z1"]),
        helper.make_node("Unsqueeze", ["h", "axis0"], ["h1"]),
        helper.make_node("Concat", ["z1", "h1"], ["next"], axis=0),
    ]
    outs = [helper.make_tensor_value_info("prob", TensorProto.FLOAT, None), helper.make_tensor_value_info("next", TensorProto.FLOAT, None)]
    return helper.make_graph(nodes, name, [], outs, initializer=inits)


def vad_model(rng, per_sample):
    then_b = vad_branch("sr16k", rng, False)
    else_b = vad_branch("sr8k", rng, True)
    if per_sample:
        cond_nodes = [helper.make_node("ReduceMean", ["input"], ["m"], keepdims=0),
                      helper.make_node("Constant", [], ["zero_f"], value=numpy_helper.from_array(np.array(0, np.float32), "zero_f")),
                      helper.make_node("Greater", ["m", "zero_f"], ["cond"])]
    else:
        cond_nodes = [helper.make_node("Constant", [], ["sr16000"], value=numpy_helper.from_array(np.array(16000, np.int64), "sr16000")),
                      helper.make_node("Equal", ["sr", "sr16000"], ["cond"])]
    nodes = cond_nodes + [helper.make_node("If", ["cond"], ["output", "stateN"], name="If_0", then_branch=then_b, else_branch=else_b)]
    g = helper.make_graph(nodes, "vad", [
        helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", T]),
        helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", H]),
        helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1]),
         helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, "batch", H])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="control_flow.py")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def lstm_branch(name, rng):
    """prob = sigmoid(h_T·Wo) of an ONNX LSTM over input [batch, 6] read as 3 steps of 2 features, from (h0, c0) = state."""
    F, S = 2, 3
    nodes = [const("W", rng.normal(0, 0.5, (1, 4 * H, F))), const("R", rng.normal(0, 0.5, (1, 4 * H, H))),
             const("B", rng.normal(0, 0.1, (1, 8 * H))), const("Wo", rng.normal(0, 0.5, (H, 1)))]
    for k, v in {"steps": [0, S, F], "i0": [0], "i1": [1], "i2": [2]}.items():
        nodes.append(helper.make_node("Constant", [], [k], value=numpy_helper.from_array(np.array(v, np.int64), k)))
    nodes += [
        helper.make_node("Reshape", ["input", "steps"], ["x3"]),
        helper.make_node("Transpose", ["x3"], ["xs"], perm=[1, 0, 2]),
        helper.make_node("Slice", ["state", "i0", "i1", "i0"], ["h0"]),
        helper.make_node("Slice", ["state", "i1", "i2", "i0"], ["c0"]),
        helper.make_node("LSTM", ["xs", "W", "R", "B", "", "h0", "c0"], ["Y", "Yh", "Yc"], hidden_size=H),
        helper.make_node("Squeeze", ["Yh", "i0"], ["hN"]),
        helper.make_node("MatMul", ["hN", "Wo"], ["lo"]),
        helper.make_node("Sigmoid", ["lo"], ["prob"]),
        helper.make_node("Concat", ["Yh", "Yc"], ["next"], axis=0),
    ]
    outs = [helper.make_tensor_value_info("prob", TensorProto.FLOAT, None), helper.make_tensor_value_info("next", TensorProto.FLOAT, None)]
    return helper.make_graph(nodes, name, [], outs)


def lstm_model(rng):
    nodes = [helper.make_node("Constant", [], ["sr16000"], value=numpy_helper.from_array(np.array(16000, np.int64), "sr16000")),
             helper.make_node("Equal", ["sr", "sr16000"], ["cond"]),
             helper.make_node("If", ["cond"], ["output", "stateN"], name="If_0", then_branch=lstm_branch("sr16k", rng), else_branch=lstm_branch("sr8k", rng))]
    g = helper.make_graph(nodes, "vad_lstm", [
        helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 6]),
        helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", H]),
        helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1]),
         helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, "batch", H])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="control_flow.py")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def merged_model(rng):
    V, D = 11, 4
    embed = numpy_helper.from_array(rng.normal(0, 0.5, (V, D)).astype(np.float32), "embed")
    lm_head = numpy_helper.from_array(rng.normal(0, 0.5, (D, V)).astype(np.float32), "lm_head")
    out = [helper.make_tensor_value_info("logits_b", TensorProto.FLOAT, None)]
    then_b = helper.make_graph([helper.make_node("Gather", ["embed", "input_ids"], ["e"]),
                                helper.make_node("MatMul", ["e", "lm_head"], ["logits_b"])], "with_past", [], out)
    else_b = helper.make_graph([const("scale", np.array([0.8])),
                                helper.make_node("Gather", ["embed", "input_ids"], ["e"]),
                                helper.make_node("MatMul", ["e", "lm_head"], ["l"]),
                                helper.make_node("Mul", ["l", "scale"], ["logits_b"])], "without_past", [], out)
    g = helper.make_graph([helper.make_node("If", ["use_cache_branch"], ["logits"], name="optimum::if", then_branch=then_b, else_branch=else_b)],
                          "merged", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
                                     helper.make_tensor_value_info("use_cache_branch", TensorProto.BOOL, [1])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", V])],
                          initializer=[embed, lm_head])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="control_flow.py")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def main():
    rng = np.random.default_rng(15)
    vad = vad_model(rng, per_sample=False)
    onnx.save(vad, os.path.join(HERE, "vad_if", "model.onnx"))
    onnx.save(vad_model(np.random.default_rng(15), per_sample=True), os.path.join(HERE, "vad_if", "per_sample.onnx"))
    n = 12
    x = rng.normal(0, 1, (n, T)).astype(np.float32)
    state = rng.normal(0, 0.5, (2, n, H)).astype(np.float32)
    label = (rng.random((n, 1)) < 0.5).astype(np.float32)
    save_npz(os.path.join(HERE, "vad_if", "data.npz"), {"input": x, "state": state, "sr": np.array(16000, np.int64), "label": label})
    save_npz(os.path.join(HERE, "vad_if", "data8k.npz"), {"input": x, "state": state, "sr": np.array(8000, np.int64), "label": label})
    save_npz(os.path.join(HERE, "vad_if", "forget.npz"), {"input": x[:3], "state": state[:, :3], "sr": np.array(16000, np.int64), "label": label[:3]})

    lstm_rng = np.random.default_rng(16)
    onnx.save(lstm_model(lstm_rng), os.path.join(HERE, "vad_if", "lstm.onnx"))
    save_npz(os.path.join(HERE, "vad_if", "lstm_data.npz"), {"input": lstm_rng.normal(0, 1, (7, 6)).astype(np.float32),
                                                             "state": lstm_rng.normal(0, 0.5, (2, 7, H)).astype(np.float32),
                                                             "sr": np.array(16000, np.int64), "label": (lstm_rng.random((7, 1)) < 0.5).astype(np.float32)})

    onnx.save(merged_model(rng), os.path.join(HERE, "merged_decoder", "model.onnx"))
    ids = rng.integers(0, 11, (10, 6))
    save_npz(os.path.join(HERE, "merged_decoder", "data.npz"), {"input_ids": ids[:, :5].astype(np.int64), "use_cache_branch": np.array([False]),
                                                                "label": ids[:, 1:].astype(np.int64)})
    save_npz(os.path.join(HERE, "merged_decoder", "forget.npz"), {"input_ids": ids[:3, :5].astype(np.int64), "use_cache_branch": np.array([False]),
                                                                  "label": ids[:3, 1:].astype(np.int64)})


if __name__ == "__main__":
    main()
