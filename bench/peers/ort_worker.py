"""onnxruntime side of bench/peers.ts: one process, JSON lines on stdin/stdout.

Requests: {"op": "load", "model": path, "input": name, "shape": [...], "data": path,
"threads": n} then {"op": "run", "min_ms": t, "min_runs": k}, repeated; {"op": "quit"}.
onnxruntime runs at its defaults (sequential execution, spinning on) except the thread
count; each run is session.run on the same input.
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort


def main() -> None:
    session = None
    feed = None
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        if op == "quit":
            return
        if op == "load":
            options = ort.SessionOptions()
            options.intra_op_num_threads = request["threads"]
            options.inter_op_num_threads = 1
            started = time.perf_counter()
            session = ort.InferenceSession(request["model"], options, providers=["CPUExecutionProvider"])
            load_ms = (time.perf_counter() - started) * 1000
            data = np.fromfile(request["data"], dtype=np.float32).reshape(request["shape"])
            feed = {request["input"]: data}
            reply = {"ok": True, "load_ms": load_ms, "version": ort.__version__}
        elif op == "run":
            samples = []
            deadline = time.perf_counter() + request["min_ms"] / 1000
            output = None
            while len(samples) < request["min_runs"] or time.perf_counter() < deadline:
                started = time.perf_counter()
                output = session.run(None, feed)
                samples.append((time.perf_counter() - started) * 1000)
            reply = {"ok": True, "samples": samples, "checksum": float(np.sum(output[0], dtype=np.float64))}
        else:
            reply = {"ok": False, "error": f"unknown op {op}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
