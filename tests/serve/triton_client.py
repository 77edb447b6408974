"""Drives `spindle serve` with the real Triton client, tritonclient[http].

Run by tests/serve_triton_test.ts, which starts the servers and writes the inputs and the
outputs that in-process forward computed. Usage:

    triton_client.py CASE_DIR MODEL_URL SLOW_URL FAILING_URL

CASE_DIR holds x.bin (FP32 [2, 4]), ids.bin (INT64 [2, 2]) and y.bin, z.bin, e.bin, the
expected outputs' raw bytes. MODEL_URL serves that model as "m" (--max-body 1 MiB);
SLOW_URL serves a slow model "m" with one slot and no queue (for 503); FAILING_URL a model
"m" whose forward fails (for 500). Prints one line per check; exits non-zero on the first
failure.
"""

import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

case_dir, model_url, slow_url, failing_url = sys.argv[1:5]


def strip(url):
    return url.removeprefix("http://")


def load(name, dtype, shape):
    with open(f"{case_dir}/{name}.bin", "rb") as f:
        return np.frombuffer(f.read(), dtype=dtype).reshape(shape)


x = load("x", np.float32, [2, 4])
ids = load("ids", np.int64, [2, 2])
expected = {
    "y": load("y", np.float32, [2, 3]),
    "z": load("z", np.float32, [2, 4]),
    "e": load("e", np.float32, [2, 2, 3]),
}


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print(f"ok: {what}", flush=True)


def inputs(binary, x_value=x, x_type="FP32"):
    a = httpclient.InferInput("x", list(x_value.shape), x_type)
    a.set_data_from_numpy(x_value, binary_data=binary)
    b = httpclient.InferInput("ids", list(ids.shape), "INT64")
    b.set_data_from_numpy(ids, binary_data=binary)
    return [a, b]


def expect_error(fn, status, fragment, what):
    try:
        fn()
    except InferenceServerException as error:
        message = error.message()
        check(
            error.status() == status and fragment in message,
            f"{what}: {error.status()} {message}",
        )
        return
    raise AssertionError(f"{what}: no error")


client = httpclient.InferenceServerClient(strip(model_url))
check(client.is_server_live(), "server live")
check(client.is_server_ready(), "server ready")
check(client.is_model_ready("m"), "model ready")
check(client.is_model_ready("m", "1"), "model version 1 ready")
check(not client.is_model_ready("nope"), "unknown model not ready")
server = client.get_server_metadata()
check(server["name"] == "spindle" and "binary_tensor_data" in server["extensions"], "server metadata")
metadata = client.get_model_metadata("m")
check(metadata["versions"] == ["1"], "model versions")
check(
    [(i["name"], i["datatype"], i["shape"]) for i in metadata["inputs"]]
    == [("x", "FP32", [-1, 4]), ("ids", "INT64", [-1, 2])],
    "input metadata",
)
check([o["name"] for o in metadata["outputs"]] == ["y", "z", "e"], "output metadata")
config = client.get_model_config("m")
check(config["max_batch_size"] == 0 and config["input"][1]["data_type"] == "TYPE_INT64", "Triton model config")
index = client.get_model_repository_index()
check(index == [{"name": "m", "version": "1", "state": "READY"}], "model repository index")

for binary in (False, True):
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("y", "z", "e")]
    result = client.infer("m", inputs(binary), outputs=outputs, request_id="abc")
    check(result.get_response()["id"] == "abc", f"request id echoed (binary={binary})")
    for name, want in expected.items():
        got = result.as_numpy(name)
        check(
            got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes(),
            f"{name} bit-identical to in-process forward (binary={binary})",
        )

# Default outputs (none requested), then a selection of one.
result = client.infer("m", inputs(True))
check(all(result.as_numpy(n).tobytes() == expected[n].tobytes() for n in expected), "all outputs by default")
result = client.infer("m", inputs(True), outputs=[httpclient.InferRequestedOutput("e", binary_data=True)])
names = [o["name"] for o in result.get_response()["outputs"]]
check(names == ["e"] and result.as_numpy("e").tobytes() == expected["e"].tobytes(), "output selection")
result = client.infer("m", inputs(False), model_version="1")
check(result.as_numpy("y").tobytes() == expected["y"].tobytes(), "versioned infer")

# Errors.
expect_error(lambda: client.get_model_metadata("nope"), "404", "unknown model 'nope'", "metadata of an unknown model")
expect_error(lambda: client.infer("nope", inputs(True)), "404", "unknown model 'nope'", "infer on an unknown model")
expect_error(lambda: client.infer("m", inputs(True), model_version="3"), "404", "no version '3'", "unknown version")
expect_error(
    lambda: client.infer("m", inputs(True, x.astype(np.float16), "FP16")),
    "400",
    "datatype 'FP16' is not supported",
    "unsupported datatype",
)
expect_error(
    lambda: client.infer("m", inputs(True, x.astype(np.float64), "FP64")),
    "400",
    "datatype 'FP64' is not supported",
    "FP64",
)
expect_error(
    lambda: client.infer("m", inputs(False, np.zeros([2, 5], np.float32))),
    "400",
    "does not match the model's [-1, 4]",
    "wrong shape",
)
expect_error(lambda: client.infer("m", inputs(True)[:1]), "400", "missing input 'ids'", "missing input")
# The client checks shapes itself; declaring another shape after setting the data gets past it.
for binary, fragment in ((False, "8 elements; the shape needs 12"), (True, "binary_data_size is 32 bytes")):
    wrong_count = httpclient.InferInput("x", [2, 4], "FP32")
    wrong_count.set_data_from_numpy(x, binary_data=binary)
    wrong_count.set_shape([3, 4])
    expect_error(
        lambda: client.infer("m", [wrong_count, inputs(True)[1]]),
        "400",
        fragment,
        f"wrong element count (binary={binary})",
    )
expect_error(
    lambda: client.infer("m", inputs(True), outputs=[httpclient.InferRequestedOutput("q")]),
    "400",
    "unknown output 'q'",
    "unknown output",
)
huge = np.zeros([70000, 4], np.float32)  # 1.1 MB over the 1 MiB --max-body
big_ids = np.zeros([70000, 2], np.int64)
big = [httpclient.InferInput("x", [70000, 4], "FP32"), httpclient.InferInput("ids", [70000, 2], "INT64")]
big[0].set_data_from_numpy(huge)
big[1].set_data_from_numpy(big_ids)
expect_error(lambda: client.infer("m", big), "413", "over the 1048576-byte limit", "body over --max-body")
check(client.is_server_live(), "still live after every error")

# 503: one slot, no queue, four requests at once.
slow = httpclient.InferenceServerClient(strip(slow_url), concurrency=4)
one = httpclient.InferInput("x", [1, 4], "FP32")
one.set_data_from_numpy(np.ones([1, 4], np.float32))
pending = [slow.async_infer("m", [one]) for _ in range(4)]
statuses = []
for request in pending:
    try:
        request.get_result()
        statuses.append("200")
    except InferenceServerException as error:
        statuses.append(error.status())
        if error.status() == "503":
            check("server is full" in error.message(), f"503 says why: {error.message()}")
check(sorted(statuses) == ["200", "503", "503", "503"], f"one served, three refused with 503: {statuses}")

# 500: the model fails.
failing = httpclient.InferenceServerClient(strip(failing_url))
expect_error(lambda: failing.infer("m", [one]), "500", "model 'm' failed", "failing model")
print("all tritonclient checks passed")
