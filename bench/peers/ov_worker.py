"""OpenVINO side of bench/peers.ts: one process, JSON lines on stdin/stdout (the requests of
ort_worker.py; "load" also takes "precision": "f32" or "default").

OpenVINO runs at its defaults (LATENCY hint) except the thread count and, for "f32",
INFERENCE_PRECISION_HINT f32: on CPUs with bf16 its default runs convolutions and matmuls
in bf16, which is reported separately. The model is compiled for the input's static shape.
"""
import json
import sys
import time

import numpy as np
import openvino as ov


def main() -> None:
    core = ov.Core()
    request_ = None
    data = None
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        if op == "quit":
            return
        if op == "load":
            config = {"INFERENCE_NUM_THREADS": request["threads"], "PERFORMANCE_HINT": "LATENCY"}
            if request.get("precision", "f32") == "f32":
                config["INFERENCE_PRECISION_HINT"] = "f32"
            started = time.perf_counter()
            model = core.read_model(request["model"])
            model.reshape({request["input"]: request["shape"]})
            compiled = core.compile_model(model, "CPU", config)
            load_ms = (time.perf_counter() - started) * 1000
            request_ = compiled.create_infer_request()
            data = np.fromfile(request["data"], dtype=np.float32).reshape(request["shape"])
            precision = compiled.get_property("INFERENCE_PRECISION_HINT")
            reply = {"ok": True, "load_ms": load_ms, "version": ov.__version__, "precision": str(precision)}
        elif op == "run":
            samples = []
            deadline = time.perf_counter() + request["min_ms"] / 1000
            output = None
            while len(samples) < request["min_runs"] or time.perf_counter() < deadline:
                started = time.perf_counter()
                output = request_.infer({0: data})
                samples.append((time.perf_counter() - started) * 1000)
            first = output[request_.model_outputs[0]]
            reply = {"ok": True, "samples": samples, "checksum": float(np.sum(first, dtype=np.float64))}
        else:
            reply = {"ok": False, "error": f"unknown op {op}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
