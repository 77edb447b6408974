"""Per-layer times of OpenVINO (PERF_COUNT) on one model, as JSON lines: what bench/layers.ts
sets beside Spindle's own profile (`infer --profile`).

  python ov_profile.py MODEL INPUT_NAME D0xD1x... THREADS RUNS [f32|default]
"""
import json
import sys
from collections import defaultdict

import numpy as np
import openvino as ov


def main() -> None:
    model_path, input_name, dims, threads, runs = sys.argv[1:6]
    precision = sys.argv[6] if len(sys.argv) > 6 else "f32"
    shape = [int(d) for d in dims.split("x")]
    config = {"INFERENCE_NUM_THREADS": int(threads), "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True}
    if precision == "f32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    core = ov.Core()
    model = core.read_model(model_path)
    model.reshape({input_name: shape})
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    data = np.random.default_rng(7).standard_normal(shape, dtype=np.float32)
    for _ in range(3):
        request.infer({0: data})
    totals = defaultdict(float)
    kinds = {}
    for _ in range(int(runs)):
        request.infer({0: data})
        for info in request.profiling_info:
            if info.status != ov.ProfilingInfo.Status.EXECUTED:
                continue
            totals[info.node_name] += info.real_time.total_seconds() * 1000
            kinds[info.node_name] = (info.node_type, info.exec_type)
    for name, ms in sorted(totals.items(), key=lambda item: -item[1]):
        node_type, exec_type = kinds[name]
        print(json.dumps({"name": name, "type": node_type, "exec": exec_type, "ms": ms / int(runs)}))


if __name__ == "__main__":
    main()
