"""PyTorch side of bench/peers.ts: Spindle's built-in models re-created in TorchScript with the
same shapes and the same forks (torch.jit.fork / torch.jit.wait), run plain (torch.jit.script)
or frozen (torch.jit.freeze + torch.jit.optimize_for_inference, which folds batch norm into
convolutions). JSON lines on stdin/stdout:

  {"op": "load", "name": "resnet", "batch": 1, "threads": 1, "frozen": true}
  {"op": "run", "min_ms": t, "min_runs": k}             latency samples of one caller
  {"op": "throughput", "concurrency": 4, "duration_ms": t}
                                                         requests/s of that many Python threads
  {"op": "quit"}

Weights are random (latency does not depend on their values); inputs have the built-ins'
shapes and dtypes. torch.set_num_threads sets the intra-op threads; the inter-op pool keeps
its default. Python threads release the GIL inside TorchScript, as PyTorch's threading note
describes for inference servers.
"""
import json
import math
import sys
import threading
import time
from typing import List

import torch
from torch import Tensor, nn


def weight(rows: int, columns: int) -> Tensor:
    return torch.randn(rows, columns) / math.sqrt(rows)


class ComputeZ(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.w = nn.Parameter(weight(hidden, hidden), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.mm(x, self.w)


class Example(nn.Module):
    def __init__(self, hidden: int = 1024):
        super().__init__()
        self.wy = nn.Parameter(weight(hidden, hidden), requires_grad=False)
        self.compute_z = ComputeZ(hidden)

    def forward(self, x: Tensor) -> Tensor:
        future = torch.jit.fork(self.compute_z, x)
        y = torch.mm(x, self.wy)
        return y + torch.jit.wait(future)


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        sizes = [512, 1024, 1024, 512, 10]
        self.layers = nn.ModuleList([nn.Linear(sizes[i], sizes[i + 1]) for i in range(4)])

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for i, layer in enumerate(self.layers):
            z = layer(h)
            if i == 3:
                h = torch.softmax(z, -1)
            elif i % 2 == 0:
                h = torch.relu(z)
            else:
                h = torch.nn.functional.gelu(z)
        return h


class ConvBn(nn.Module):
    def __init__(self, inputs: int, outputs: int, kernel: int, stride: int, relu: bool):
        super().__init__()
        self.conv = nn.Conv2d(inputs, outputs, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(outputs)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn(self.conv(x))
        return torch.relu(y) if self.relu else y


class Block(nn.Module):
    def __init__(self, inputs: int, outputs: int, stride: int):
        super().__init__()
        self.first = ConvBn(inputs, outputs, 3, stride, True)
        self.second = ConvBn(outputs, outputs, 3, 1, False)
        self.has_shortcut = stride != 1 or inputs != outputs
        self.shortcut = ConvBn(inputs, outputs, 1, stride, False) if self.has_shortcut else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.second(self.first(x))
        return torch.relu(y + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = ConvBn(3, 32, 3, 1, True)
        self.pool = nn.MaxPool2d(2, 2)
        self.blocks = nn.Sequential(Block(32, 32, 1), Block(32, 64, 2), Block(64, 128, 2), Block(128, 128, 1))
        self.head = nn.Parameter(weight(128, 10), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        h = self.blocks(self.pool(self.stem(x)))
        return torch.mm(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(h, 1), 1), self.head)


class Tower(nn.Module):
    def __init__(self, sizes: List[int]):
        super().__init__()
        self.weights = nn.ParameterList(
            [nn.Parameter(weight(sizes[i], sizes[i + 1]), requires_grad=False) for i in range(len(sizes) - 1)]
        )

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for w in self.weights:
            h = torch.relu(torch.mm(h, w))
        return h


class Bag(nn.Module):
    def __init__(self, rows: int, width: int):
        super().__init__()
        self.bag = nn.EmbeddingBag(rows, width, mode="sum")

    def forward(self, indices: Tensor, offsets: Tensor) -> Tensor:
        return self.bag(indices, offsets)


class Dlrm(nn.Module):
    def __init__(self, tables: int = 8, rows: int = 20_000, width: int = 64):
        super().__init__()
        self.bottom = Tower([13, 256, 128, width])
        self.bags = nn.ModuleList([Bag(rows, width) for _ in range(tables)])
        self.top = Tower([width * (tables + 1), 512, 256])
        self.last = nn.Parameter(weight(256, 1), requires_grad=False)

    def forward(self, dense: Tensor, offsets: Tensor, indices: List[Tensor]) -> Tensor:
        futures = [torch.jit.fork(self.bottom, dense)]
        for t, bag in enumerate(self.bags):
            futures.append(torch.jit.fork(bag, indices[t], offsets))
        features = torch.cat([torch.jit.wait(f) for f in futures], 1)
        return torch.sigmoid(torch.mm(self.top(features), self.last))


class Head(nn.Module):
    def __init__(self, model: int, width: int, batch: int, length: int):
        super().__init__()
        self.q = nn.Parameter(weight(model, width), requires_grad=False)
        self.k = nn.Parameter(weight(model, width), requires_grad=False)
        self.v = nn.Parameter(weight(model, width), requires_grad=False)
        self.batch = batch
        self.length = length
        self.scale = 1 / math.sqrt(width)

    def forward(self, x: Tensor) -> Tensor:
        queries = torch.mm(x, self.q)
        keys = torch.mm(x, self.k)
        values = torch.mm(x, self.v)
        parts: List[Tensor] = []
        for b in range(self.batch):
            lo = b * self.length
            hi = lo + self.length
            scores = torch.mm(queries[lo:hi], keys[lo:hi].t()) * self.scale
            parts.append(torch.mm(torch.softmax(scores, -1), values[lo:hi]))
        return torch.cat(parts, 0)


class Transformer(nn.Module):
    def __init__(self, batch: int, length: int = 64, model: int = 256, heads: int = 4):
        super().__init__()
        self.heads = nn.ModuleList([Head(model, model // heads, batch, length) for _ in range(heads)])
        self.output = nn.Parameter(weight(model, model), requires_grad=False)
        self.up = nn.Parameter(weight(model, 4 * model), requires_grad=False)
        self.down = nn.Parameter(weight(4 * model, model), requires_grad=False)
        self.norm1 = nn.LayerNorm(model, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(model, elementwise_affine=False)

    def forward(self, x: Tensor) -> Tensor:
        futures = [torch.jit.fork(head, x) for head in self.heads]
        attention = torch.mm(torch.cat([torch.jit.wait(f) for f in futures], 1), self.output)
        normed = self.norm1(x + attention)
        feed_forward = torch.mm(torch.nn.functional.gelu(torch.mm(normed, self.up)), self.down)
        return self.norm2(normed + feed_forward)


DEFAULT_BATCH = {"example": 64, "mlp": 32, "resnet": 1, "dlrm": 64, "transformer": 4}


def build(name: str, batch: int):
    if name == "example":
        return Example(), [torch.randn(batch, 1024)]
    if name == "mlp":
        return Mlp(), [torch.randn(batch, 512)]
    if name == "resnet":
        return ResNet(), [torch.randn(batch, 3, 64, 64)]
    if name == "dlrm":
        indices = [torch.randint(0, 20_000, (batch * 20,)) for _ in range(8)]
        offsets = torch.arange(0, batch * 20, 20)
        return Dlrm(), [torch.randn(batch, 13), offsets, indices]
    if name == "transformer":
        return Transformer(batch), [torch.randn(batch * 64, 256)]
    raise ValueError(f"unknown built-in {name}")


def main() -> None:
    module = None
    inputs = None
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        if op == "quit":
            return
        try:
            if op == "load":
                torch.manual_seed(0)
                torch.set_num_threads(request["threads"])
                batch = request.get("batch") or DEFAULT_BATCH[request["name"]]
                eager, inputs = build(request["name"], batch)
                eager.eval()
                started = time.perf_counter()
                with torch.no_grad():
                    module = torch.jit.script(eager)
                    if request.get("frozen"):
                        module = torch.jit.optimize_for_inference(torch.jit.freeze(module))
                load_ms = (time.perf_counter() - started) * 1000
                reply = {"ok": True, "load_ms": load_ms, "version": torch.__version__}
            elif op == "run":
                samples = []
                deadline = time.perf_counter() + request["min_ms"] / 1000
                with torch.no_grad():
                    while len(samples) < request["min_runs"] or time.perf_counter() < deadline:
                        started = time.perf_counter()
                        module(*inputs)
                        samples.append((time.perf_counter() - started) * 1000)
                reply = {"ok": True, "samples": samples, "checksum": 0.0}
            elif op == "throughput":
                deadline = time.perf_counter() + request["duration_ms"] / 1000
                counts = [0] * request["concurrency"]

                def worker(slot: int) -> None:
                    with torch.no_grad():
                        while time.perf_counter() < deadline:
                            module(*inputs)
                            counts[slot] += 1

                started = time.perf_counter()
                threads = [threading.Thread(target=worker, args=(i,)) for i in range(request["concurrency"])]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                elapsed = time.perf_counter() - started
                reply = {"ok": True, "per_s": sum(counts) / elapsed, "requests": sum(counts)}
            else:
                reply = {"ok": False, "error": f"unknown op {op}"}
        except Exception as error:  # the orchestrator prints it and stops
            reply = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
