"""Quantized ONNX test models for Spindle's int8 support (issue 16), made with onnxruntime's own
tools, and onnxruntime's outputs on them.

  .cache/py-peers/bin/python tools/make_int8_models.py [--fixtures-only]

Writes into .cache/int8/ (git-ignored; needs onnxruntime, onnx, numpy, torch):
  {cls,rec,det}_{qdq,qop,dyn}.onnx   PaddleOCR quantized with quantize_static (QDQ and QOperator
                                     formats, a synthetic calibration set) and quantize_dynamic
  bert_dyn.onnx, bert.onnx           a small BERT-style encoder (torch export) and its
                                     quantize_dynamic version
  <name>.json                        a fixed input and onnxruntime's output on it
and into tests/fixtures/int8/ (committed, a few KB): one tiny model per quantized op, built with
onnx.helper, with its input and onnxruntime's output, so CI checks each op without Python.
"""
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, ".cache", "int8")
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "int8")
ASSETS = os.path.join(ROOT, ".cache", "models", "package", "assets")
PADDLE = {
    "cls": ("ch_ppocr_mobile_v2.0_cls_infer.onnx", [1, 3, 48, 192]),
    "rec": ("ch_PP-OCRv4_rec_infer.onnx", [1, 3, 48, 320]),
    "det": ("ch_PP-OCRv4_det_infer.onnx", [1, 3, 320, 320]),
}


def ort_run(path, feeds):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def record(path, feeds):
    """Writes <path>.json: the inputs and onnxruntime's outputs (flat lists with shapes)."""
    outputs = ort_run(path, feeds)
    entry = {
        "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype), "data": v.ravel().tolist()} for k, v in feeds.items()},
        "outputs": [{"shape": list(o.shape), "dtype": str(o.dtype), "data": o.ravel().tolist()} for o in outputs],
    }
    with open(path[:-5] + ".json", "w") as f:
        json.dump(entry, f)


def image_like(shape, seed, lines=None):
    """A synthetic text image: light, shaded paper with lines of dark glyph-like strokes, so
    that det finds text and rec/cls see characters; normalised as PaddleOCR does ((x - 0.5) / 0.5)."""
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    image = 0.85 + 0.1 * np.sin(x / (40 + seed)) * np.cos(y / (30 + seed))
    line_height = max(8, h // 10) if lines is None else int(h * 0.6)
    count = lines if lines is not None else max(1, h // (2 * line_height))
    for line in range(count):
        top = int(rng.integers(0, h - line_height)) if lines is None else (h - line_height) // 2
        left = int(rng.integers(0, max(1, w // 4)))
        width = int(rng.integers(w // 3, w - left))
        glyph = max(4, int(line_height * 0.8))
        for g0 in range(left, left + width - glyph, glyph + max(1, glyph // 4)):
            for _ in range(int(rng.integers(2, 5))):
                t = max(1, glyph // 6)
                if rng.random() < 0.5:
                    r = top + int(rng.integers(0, line_height - t))
                    image[r:r + t, g0:g0 + glyph] = 0.1
                else:
                    col = g0 + int(rng.integers(0, glyph - t))
                    image[top:top + line_height, col:col + t] = 0.1
    image += rng.normal(0, 0.02, image.shape).astype(np.float32)
    image = np.repeat(image[None, None], c, axis=1).repeat(n, axis=0)
    return ((image - 0.5) / 0.5).astype(np.float32)


def fixed_shape_model(source, shape, target):
    """The model with its input's symbolic dims fixed (calibration runs one shape) at opset 13."""
    from onnx import version_converter

    model = onnx.load(source)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, size in zip(dims, shape):
        dim.Clear()
        dim.dim_value = size
    for output in model.graph.output:
        for dim in output.type.tensor_type.shape.dim:
            dim.Clear()
    model = version_converter.convert_version(model, 13)
    raw = target[:-5] + "_raw.onnx"
    onnx.save(model, raw)
    # onnxruntime's recommended pre-processing: shape inference and graph optimisation, which
    # also turns Paddle's Constant-node weights into initializers and folds batch norms into
    # convolutions (quantize_static quantizes initializer weights only).
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(raw, target)
    os.remove(raw)


def paddle_models():
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self, name, shape):
            self.items = iter([{name: image_like(shape, seed, 1 if shape[2] == 48 else None)} for seed in range(8)])

        def get_next(self):
            return next(self.items, None)

    for key, (file, shape) in PADDLE.items():
        float_path = os.path.join(CACHE, f"{key}_f32.onnx")
        fixed_shape_model(os.path.join(ASSETS, file), shape, float_path)
        name = onnx.load(float_path).graph.input[0].name
        for fmt, suffix in ((QuantFormat.QDQ, "qdq"), (QuantFormat.QOperator, "qop")):
            target = os.path.join(CACHE, f"{key}_{suffix}.onnx")
            quantize_static(float_path, target, Reader(name, shape), quant_format=fmt, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        quantize_dynamic(float_path, os.path.join(CACHE, f"{key}_dyn.onnx"), weight_type=QuantType.QInt8)
        feeds = {name: image_like(shape, 99, 1 if shape[2] == 48 else None)}
        for suffix in ("f32", "qdq", "qop", "dyn"):
            record(os.path.join(CACHE, f"{key}_{suffix}.onnx"), feeds)
        print(key, "done", flush=True)


def bert_model():
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class Layer(torch.nn.Module):
        """A BERT encoder layer: self-attention, then a GELU feed-forward, post-norm."""

        def __init__(self, width, heads, hidden):
            super().__init__()
            self.heads = heads
            self.q = torch.nn.Linear(width, width)
            self.k = torch.nn.Linear(width, width)
            self.v = torch.nn.Linear(width, width)
            self.proj = torch.nn.Linear(width, width)
            self.norm1 = torch.nn.LayerNorm(width)
            self.up = torch.nn.Linear(width, hidden)
            self.down = torch.nn.Linear(hidden, width)
            self.norm2 = torch.nn.LayerNorm(width)

        def forward(self, x):
            b, t, c = x.shape
            q, k, v = (f(x).reshape(b, t, self.heads, c // self.heads).transpose(1, 2) for f in (self.q, self.k, self.v))
            attention = torch.softmax(q @ k.transpose(-1, -2) / (c // self.heads) ** 0.5, dim=-1)
            x = self.norm1(x + self.proj((attention @ v).transpose(1, 2).reshape(b, t, c)))
            return self.norm2(x + self.down(torch.nn.functional.gelu(self.up(x))))

    torch.manual_seed(0)
    encoder = torch.nn.Sequential(Layer(128, 4, 512), Layer(128, 4, 512)).eval()
    x = torch.randn(1, 32, 128)
    path = os.path.join(CACHE, "bert.onnx")
    torch.onnx.export(encoder, (x,), path, input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
    quantize_dynamic(path, os.path.join(CACHE, "bert_dyn.onnx"), weight_type=QuantType.QInt8)
    feeds = {"x": np.random.default_rng(5).standard_normal((1, 32, 128)).astype(np.float32)}
    record(path, feeds)
    record(os.path.join(CACHE, "bert_dyn.onnx"), feeds)
    print("bert done", flush=True)


# ---------------------------------------------------------------------------------------
# Fixtures: one tiny model per quantized op.

def tensor(name, array, dtype):
    return numpy_helper.from_array(np.asarray(array, dtype=dtype), name)


def save_fixture(name, nodes, inputs, outputs, initializers, feeds, opsets=(("", 21),)):
    graph = helper.make_graph(nodes, name, inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    model.ir_version = 8
    path = os.path.join(FIXTURES, f"{name}.onnx")
    onnx.save(model, path)
    if feeds is not None:
        record(path, feeds)


def bad_fixtures():
    """Models with bad quantization parameters (onnxruntime refuses them too: no outputs)."""
    f = TensorProto.FLOAT
    vin = lambda n, t, s: helper.make_tensor_value_info(n, t, s)
    cases = {
        "bad_scale_zero": ([0.5, 0.0, 0.1], [1, 2, 3], 1),
        "bad_scale_nan": ([0.5, float("nan"), 0.1], [1, 2, 3], 1),
        "bad_scale_negative": ([-0.5, 0.5, 0.1], [1, 2, 3], 1),
        "bad_channel_count": ([0.5, 0.5, 0.1, 0.2], [1, 2, 3, 4], 1),
        "bad_axis": ([0.5, 0.5, 0.1], [1, 2, 3], 5),
        "bad_zero_count": ([0.5, 0.5, 0.1], [1, 2], 1),
    }
    for name, (scales, zeros, axis) in cases.items():
        save_fixture(
            name,
            [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=axis)],
            [vin("x", f, [2, 3, 5, 7])], [vin("q", TensorProto.UINT8, [2, 3, 5, 7])],
            [tensor("s", scales, np.float32), tensor("z", zeros, np.uint8)], None)


def fixtures():
    rng = np.random.default_rng(1)
    f = TensorProto.FLOAT
    x = rng.uniform(-3, 3, (2, 3, 5, 7)).astype(np.float32)
    x.flat[:4] = [0.25, -0.25, 0.75, 1e6]  # ties (round half to even) and saturation
    vin = lambda n, t, s: helper.make_tensor_value_info(n, t, s)
    # QuantizeLinear / DequantizeLinear, per tensor and per channel, u8 and s8.
    for signed in (False, True):
        t, dtype, tag = (TensorProto.INT8, np.int8, "s8") if signed else (TensorProto.UINT8, np.uint8, "u8")
        zp = [-3, 0, 5] if signed else [120, 128, 3]
        save_fixture(
            f"qdq_axis_{tag}",
            [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1)],
            [vin("x", f, [2, 3, 5, 7])], [vin("q", t, [2, 3, 5, 7]), vin("y", f, [2, 3, 5, 7])],
            [tensor("s", [0.5, 0.02, 0.1], np.float32), tensor("z", zp, dtype)], {"x": x})
        save_fixture(
            f"qdq_tensor_{tag}",
            [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
            [vin("x", f, [2, 3, 5, 7])], [vin("q", t, [2, 3, 5, 7]), vin("y", f, [2, 3, 5, 7])],
            [tensor("s", 0.05, np.float32), tensor("z", zp[0], dtype)], {"x": x})
    save_fixture(
        "dynamic_quantize",
        [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"])],
        [vin("x", f, [2, 3, 5, 7])], [vin("q", TensorProto.UINT8, [2, 3, 5, 7]), vin("s", f, []), vin("z", TensorProto.UINT8, [])],
        [], {"x": x})
    # MatMulInteger: u8 activations, s8 weights with per-column zero points.
    a = rng.integers(0, 256, (2, 5, 19)).astype(np.uint8)
    save_fixture(
        "matmul_integer",
        [helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"])],
        [vin("a", TensorProto.UINT8, [2, 5, 19])], [vin("y", TensorProto.INT32, [2, 5, 11])],
        [tensor("b", rng.integers(-128, 128, (19, 11)), np.int8), tensor("az", 131, np.uint8),
         tensor("bz", rng.integers(-4, 4, 11), np.int8)], {"a": a})
    # QLinearMatMul, u8 x s8 -> u8.
    save_fixture(
        "qlinear_matmul",
        [helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])],
        [vin("a", TensorProto.UINT8, [2, 5, 19])], [vin("y", TensorProto.UINT8, [2, 5, 11])],
        [tensor("as", 0.02, np.float32), tensor("az", 128, np.uint8), tensor("b", rng.integers(-128, 128, (19, 11)), np.int8),
         tensor("bs", 0.01, np.float32), tensor("bz", 0, np.int8), tensor("ys", 0.1, np.float32), tensor("yz", 100, np.uint8)],
        {"a": a})
    # QLinearConv with per-channel weights, bias, stride and padding; ConvInteger.
    xc = rng.integers(0, 256, (1, 4, 9, 8)).astype(np.uint8)
    w = rng.integers(-128, 128, (6, 4, 3, 3)).astype(np.int8)
    save_fixture(
        "qlinear_conv",
        [helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"], pads=[1, 1, 1, 1], strides=[2, 1])],
        [vin("x", TensorProto.UINT8, [1, 4, 9, 8])], [vin("y", TensorProto.UINT8, [1, 6, 5, 8])],
        [tensor("xs", 0.03, np.float32), tensor("xz", 120, np.uint8), tensor("w", w, np.int8),
         tensor("ws", rng.uniform(0.002, 0.01, 6), np.float32), tensor("wz", np.zeros(6), np.int8),
         tensor("ys", 0.2, np.float32), tensor("yz", 90, np.uint8), tensor("b", rng.integers(-500, 500, 6), np.int32)],
        {"x": xc})
    save_fixture(
        "conv_integer",
        [helper.make_node("ConvInteger", ["x", "w", "xz"], ["y"], pads=[1, 0, 1, 0], group=2)],
        [vin("x", TensorProto.UINT8, [1, 4, 9, 8])], [vin("y", TensorProto.INT32, [1, 6, 9, 6])],
        [tensor("w", rng.integers(-128, 128, (6, 2, 3, 3)), np.int8), tensor("xz", 7, np.uint8)], {"x": xc})
    # QLinearAdd / QLinearMul (com.microsoft), broadcasting a [4, 1, 1] operand.
    for op in ("QLinearAdd", "QLinearMul"):
        save_fixture(
            op.lower().replace("qlinear", "qlinear_"),
            [helper.make_node(op, ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"], domain="com.microsoft")],
            [vin("a", TensorProto.UINT8, [1, 4, 9, 8])], [vin("y", TensorProto.UINT8, [1, 4, 9, 8])],
            [tensor("as", 0.03, np.float32), tensor("az", 120, np.uint8), tensor("b", rng.integers(0, 256, (4, 1, 1)), np.uint8),
             tensor("bs", 0.05, np.float32), tensor("bz", 128, np.uint8), tensor("ys", 0.07, np.float32), tensor("yz", 110, np.uint8)],
            {"a": xc}, opsets=(("", 21), ("com.microsoft", 1)))
    # A QDQ MatMul (the pattern quantize_static writes): fused into an integer kernel on import.
    xf = rng.uniform(-2, 2, (3, 40)).astype(np.float32)
    save_fixture(
        "qdq_matmul",
        [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
         helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
         helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=1),
         helper.make_node("MatMul", ["xd", "wd"], ["y"])],
        [vin("x", f, [3, 40])], [vin("y", f, [3, 17])],
        [tensor("xs", 4 / 255, np.float32), tensor("xz", 128, np.uint8), tensor("w", rng.integers(-127, 128, (40, 17)), np.int8),
         tensor("ws", rng.uniform(0.001, 0.01, 17), np.float32), tensor("wz", np.zeros(17), np.int8)],
        {"x": xf})


if __name__ == "__main__":
    os.makedirs(FIXTURES, exist_ok=True)
    fixtures()
    bad_fixtures()
    print("fixtures done", flush=True)
    if "--fixtures-only" in sys.argv:
        sys.exit(0)
    os.makedirs(CACHE, exist_ok=True)
    if "--paddle-only" not in sys.argv:
        bert_model()
    if "--bert-only" not in sys.argv:
        paddle_models()
