"""Generates tests/fixtures/torch/: small ONNX models as users export them, with inputs and
onnxruntime's outputs, so that CI (which has no torch) checks Spindle against onnxruntime.

  .cache/py-peers/bin/python tools/make_torch_fixtures.py

Each model NAME gets NAME.onnx and NAME.json: {"cases": [{"inputs": {name: tensor},
"outputs": [tensor, ...]}]}, a tensor being {"dtype", "shape", "data"} (data flat, float32
values as JSON numbers, bool as 0/1). Two or more cases per model, at different shapes.

Models:
  control_if, control_loop, control_scan  onnx.helper graphs whose If condition, Loop trip
      count and condition are computed at run time from the inputs (not foldable at import)
  torch_control   a scripted torch module with data-dependent `if` and a `for` over a size
  torch_gru       an embedding + GRU + linear tagger, dynamic batch and length
  torch_bert      a 2-layer BERT-style encoder (attention, GELU, LayerNorm), dynamic batch
      and sequence
  streaming_state a GRU whose state goes out and comes back in on the next call, with a
      scalar input; its cases are consecutive calls

torch is a generator of test data here, never a dependency of Spindle. Seeds are fixed, so a
rerun writes the same models and numbers (up to the exporter's version).
"""

import json
import os
import sys

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "torch")


def tensor_json(array):
    array = np.asarray(array)
    if array.dtype == np.bool_:
        return {"dtype": "bool", "shape": list(array.shape), "data": array.astype(np.int32).ravel().tolist()}
    if array.dtype == np.int64:
        return {"dtype": "int64", "shape": list(array.shape), "data": array.ravel().tolist()}
    if array.dtype == np.int32:
        return {"dtype": "int32", "shape": list(array.shape), "data": array.ravel().tolist()}
    data = [float(v) for v in array.astype(np.float32).ravel()]
    return {"dtype": "float32", "shape": list(array.shape), "data": data}


def write(name, model_bytes, feeds_list):
    path = os.path.join(OUT, name + ".onnx")
    with open(path, "wb") as f:
        f.write(model_bytes)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    cases = []
    for feeds in feeds_list:
        outputs = session.run(None, feeds)
        cases.append({"inputs": {k: tensor_json(v) for k, v in feeds.items()}, "outputs": [tensor_json(o) for o in outputs]})
    with open(os.path.join(OUT, name + ".json"), "w") as f:
        json.dump({"outputs": [o.name for o in session.get_outputs()], "cases": cases}, f, separators=(",", ":"))
    print(f"{name}: {os.path.getsize(path)} bytes, {len(cases)} cases")


def control_if():
    # y = x * 2 if sum(x) > 0 else x - w (w is an initializer the else branch captures)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])
    then_out = helper.make_tensor_value_info("then_y", TensorProto.FLOAT, None)
    else_out = helper.make_tensor_value_info("else_y", TensorProto.FLOAT, None)
    then_graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["then_y"])], "then", [], [then_out])
    else_graph = helper.make_graph(
        [helper.make_node("Sub", ["x", "w"], ["else_y"])], "else", [], [else_out])
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    w = helper.make_tensor("w", TensorProto.FLOAT, [3], [0.5, -1.0, 2.0])
    graph = helper.make_graph([
        helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
        helper.make_node("Greater", ["total", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=then_graph, else_branch=else_graph),
    ], "control_if", [x], [y], initializer=[zero, w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    rng = np.random.default_rng(1)
    feeds = [{"x": np.abs(rng.standard_normal((2, 3))).astype(np.float32)},
             {"x": -np.abs(rng.standard_normal((4, 3))).astype(np.float32)},
             {"x": rng.standard_normal((5, 3)).astype(np.float32)}]
    write("control_if", model.SerializeToString(), feeds)


def control_loop():
    # for i < n while sum(acc) < limit: acc = acc * 0.5 + i * colsum(x); scan acc.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", 2])
    n = helper.make_tensor_value_info("n", TensorProto.INT64, [])
    limit = helper.make_tensor_value_info("limit", TensorProto.FLOAT, [])
    final = helper.make_tensor_value_info("final", TensorProto.FLOAT, [2])
    trace = helper.make_tensor_value_info("trace", TensorProto.FLOAT, ["steps", 2])
    body = helper.make_graph([
        helper.make_node("ReduceSum", ["x"], ["colsum"], keepdims=0, axes=[0]),
        helper.make_node("Cast", ["i"], ["i_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["colsum", "i_float"], ["xi"]),
        helper.make_node("Mul", ["acc_in", "half"], ["scaled"]),
        helper.make_node("Add", ["scaled", "xi"], ["acc_out"]),
        helper.make_node("ReduceSum", ["acc_out"], ["total"], keepdims=0),
        helper.make_node("Less", ["total", "limit"], ["cond_out"]),
        helper.make_node("Identity", ["acc_out"], ["scan_out"]),
    ], "body", [
        helper.make_tensor_value_info("i", TensorProto.INT64, []),
        helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
        helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [2]),
    ], [
        helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
        helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [2]),
        helper.make_tensor_value_info("scan_out", TensorProto.FLOAT, [2]),
    ], initializer=[helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])])
    graph = helper.make_graph([
        helper.make_node("Constant", [], ["start"], value=helper.make_tensor("s", TensorProto.FLOAT, [2], [0, 0])),
        helper.make_node("Constant", [], ["yes"], value=helper.make_tensor("t", TensorProto.BOOL, [], [True])),
        helper.make_node("Loop", ["n", "yes", "start"], ["final", "trace"], body=body),
    ], "control_loop", [x, n, limit], [final, trace])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    onnx.checker.check_model(model)
    rng = np.random.default_rng(2)
    feeds = [
        {"x": rng.standard_normal((3, 2)).astype(np.float32), "n": np.array(5, np.int64), "limit": np.array(100, np.float32)},
        {"x": np.abs(rng.standard_normal((4, 2))).astype(np.float32), "n": np.array(9, np.int64), "limit": np.array(2.5, np.float32)},
        {"x": rng.standard_normal((2, 2)).astype(np.float32), "n": np.array(0, np.int64), "limit": np.array(1, np.float32)},
    ]
    write("control_loop", model.SerializeToString(), feeds)


def control_scan():
    # A running product-sum over axis 1, the second scan input read backwards; outputs
    # stacked at axis 1 and reversed; w captured from the outer graph.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, "t"])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, "t"])
    s0 = helper.make_tensor_value_info("s0", TensorProto.FLOAT, [2])
    body = helper.make_graph([
        helper.make_node("Mul", ["xt", "zt"], ["p"]),
        helper.make_node("Add", ["s_in", "p"], ["q"]),
        helper.make_node("Mul", ["q", "w"], ["s_out"]),
        helper.make_node("Identity", ["s_out"], ["y_t"]),
    ], "body", [
        helper.make_tensor_value_info("s_in", TensorProto.FLOAT, [2]),
        helper.make_tensor_value_info("xt", TensorProto.FLOAT, [2]),
        helper.make_tensor_value_info("zt", TensorProto.FLOAT, [2]),
    ], [
        helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [2]),
        helper.make_tensor_value_info("y_t", TensorProto.FLOAT, [2]),
    ])
    graph = helper.make_graph([
        helper.make_node("Sigmoid", ["s0"], ["w"]),
        helper.make_node("Scan", ["s0", "x", "z"], ["s", "y"], body=body, num_scan_inputs=2,
                         scan_input_axes=[1, 1], scan_input_directions=[0, 1],
                         scan_output_axes=[1], scan_output_directions=[1]),
    ], "control_scan", [s0, x, z], [
        helper.make_tensor_value_info("s", TensorProto.FLOAT, [2]),
        helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, "t"]),
    ])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    rng = np.random.default_rng(3)
    feeds = [{"s0": rng.standard_normal(2).astype(np.float32), "x": rng.standard_normal((2, t)).astype(np.float32),
              "z": rng.standard_normal((2, t)).astype(np.float32)} for t in (1, 4, 7)]
    write("control_scan", model.SerializeToString(), feeds)


def streaming_state():
    # A streaming model: a GRU over a chunk whose state goes out (state_out) and comes back in
    # (state) on the next call, and a scalar input (gain). Cases are consecutive calls, each
    # fed the state the previous one returned, as a voice model is run.
    hidden, width = 8, 4
    rng = np.random.default_rng(7)
    weights = [
        helper.make_tensor("W", TensorProto.FLOAT, [1, 3 * hidden, width], rng.standard_normal(3 * hidden * width) * 0.4),
        helper.make_tensor("R", TensorProto.FLOAT, [1, 3 * hidden, hidden], rng.standard_normal(3 * hidden * hidden) * 0.4),
        helper.make_tensor("B", TensorProto.FLOAT, [1, 6 * hidden], rng.standard_normal(6 * hidden) * 0.1),
    ]
    graph = helper.make_graph([
        helper.make_node("GRU", ["chunk", "W", "R", "B", "", "state"], ["y", "state_out"], hidden_size=hidden),
        helper.make_node("Mul", ["y", "gain"], ["scaled"]),
        helper.make_node("Squeeze", ["scaled", "one"], ["out"]),
    ], "streaming_state", [
        helper.make_tensor_value_info("chunk", TensorProto.FLOAT, ["time", 1, width]),
        helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, 1, hidden]),
        helper.make_tensor_value_info("gain", TensorProto.FLOAT, []),
    ], [
        helper.make_tensor_value_info("out", TensorProto.FLOAT, ["time", 1, hidden]),
        helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [1, 1, hidden]),
    ], initializer=weights + [helper.make_tensor("one", TensorProto.INT64, [1], [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.checker.check_model(model)
    path = os.path.join(OUT, "streaming_state.onnx")
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    state = np.zeros((1, 1, hidden), np.float32)
    cases = []
    for length, gain in ((3, 1.0), (5, 0.5), (1, 2.0), (4, -1.0)):
        feeds = {"chunk": rng.standard_normal((length, 1, width)).astype(np.float32), "state": state,
                 "gain": np.array(gain, np.float32)}
        out, state = session.run(None, feeds)
        cases.append({"inputs": {k: tensor_json(v) for k, v in feeds.items()},
                      "outputs": [tensor_json(out), tensor_json(state)]})
    with open(os.path.join(OUT, "streaming_state.json"), "w") as f:
        json.dump({"outputs": ["out", "state_out"], "cases": cases}, f, separators=(",", ":"))
    print(f"streaming_state: {os.path.getsize(path)} bytes, {len(cases)} cases")


def export(module, args, names, outputs, dynamic_axes):
    import io

    import torch
    buffer = io.BytesIO()
    torch.onnx.export(module, args, buffer, input_names=names, output_names=outputs,
                      dynamic_axes=dynamic_axes, opset_version=17, dynamo=False)
    return buffer.getvalue()


def torch_control():
    import torch

    class Control(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 4)

        def forward(self, x, steps):
            h = self.linear(x)
            if bool(h.sum() > 0):
                h = torch.relu(h) * 2.0
            else:
                h = torch.tanh(h) - 1.0
            for _ in range(int(steps)):
                h = h * 0.5 + x
            return h

    torch.manual_seed(0)
    module = torch.jit.script(Control().eval())
    x = torch.randn(3, 4)
    steps = torch.tensor(2, dtype=torch.int64)
    model = export(module, (x, steps), ["x", "steps"], ["y"], {"x": {0: "batch"}})
    rng = np.random.default_rng(4)
    feeds = [{"x": rng.standard_normal((b, 4)).astype(np.float32) * sign, "steps": np.array(n, np.int64)}
             for b, n, sign in ((1, 0, 1), (3, 2, -1), (6, 5, 1), (2, 3, -1))]
    write("torch_control", model, feeds)


def torch_gru():
    import torch

    class Tagger(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(50, 16)
            self.gru = torch.nn.GRU(16, 24, batch_first=True)
            self.out = torch.nn.Linear(24, 7)

        def forward(self, tokens):
            h, _ = self.gru(self.embedding(tokens))
            return self.out(h)

    torch.manual_seed(1)
    module = Tagger().eval()
    tokens = torch.randint(0, 50, (2, 5))
    model = export(module, (tokens,), ["tokens"], ["tags"], {"tokens": {0: "batch", 1: "length"}, "tags": {0: "batch", 1: "length"}})
    rng = np.random.default_rng(5)
    feeds = [{"tokens": rng.integers(0, 50, (b, t)).astype(np.int64)} for b, t in ((1, 3), (2, 9), (3, 17))]
    write("torch_gru", model, feeds)


def torch_bert():
    import torch

    class Layer(torch.nn.Module):
        def __init__(self, width, heads):
            super().__init__()
            self.heads = heads
            self.qkv = torch.nn.Linear(width, 3 * width)
            self.proj = torch.nn.Linear(width, width)
            self.norm1 = torch.nn.LayerNorm(width)
            self.ff1 = torch.nn.Linear(width, 4 * width)
            self.ff2 = torch.nn.Linear(4 * width, width)
            self.norm2 = torch.nn.LayerNorm(width)

        def forward(self, x, mask):
            b, t, width = x.shape
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            split = lambda a: a.reshape(b, t, self.heads, width // self.heads).transpose(1, 2)
            q, k, v = split(q), split(k), split(v)
            scores = q @ k.transpose(-1, -2) / (width // self.heads) ** 0.5 + mask
            attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, width)
            x = self.norm1(x + self.proj(attended))
            return self.norm2(x + self.ff2(torch.nn.functional.gelu(self.ff1(x))))

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(100, 32)
            # 256 positions: import probes dynamic dims at sizes up to 128 (lib/onnx/import.ts
            # DYNAMIC_SIZES), and a smaller table fails that probe.
            self.position = torch.nn.Embedding(256, 32)
            self.layers = torch.nn.ModuleList([Layer(32, 4), Layer(32, 4)])

        def forward(self, ids, attention_mask):
            positions = torch.arange(ids.shape[1]).unsqueeze(0)
            x = self.embedding(ids) + self.position(positions)
            mask = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -10000.0
            for layer in self.layers:
                x = layer(x, mask)
            return x

    torch.manual_seed(2)
    module = Encoder().eval()
    ids = torch.randint(0, 100, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.int64)
    axes = {"ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "hidden": {0: "batch", 1: "sequence"}}
    model = export(module, (ids, mask), ["ids", "attention_mask"], ["hidden"], axes)
    rng = np.random.default_rng(6)
    feeds = []
    for b, t in ((1, 4), (2, 11), (3, 20)):
        m = np.ones((b, t), np.int64)
        m[:, t - t // 4:] = 0  # padding at the end
        feeds.append({"ids": rng.integers(0, 100, (b, t)).astype(np.int64), "attention_mask": m})
    write("torch_bert", model, feeds)


def main():
    os.makedirs(OUT, exist_ok=True)
    chosen = set(sys.argv[1:])
    for generate in (control_if, control_loop, control_scan, streaming_state, torch_control, torch_gru, torch_bert):
        if not chosen or generate.__name__ in chosen:
            generate()


if __name__ == "__main__":
    main()
