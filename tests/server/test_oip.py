"""The Open Inference Protocol beside edgetune's own API: Triton's Python client (tritonclient,
unchanged, in its own process) against a real server with tokens and TLS, and the same numbers
as Predict on the same inputs."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import grpc
import numpy as np
import pytest

from edgetune.oip import grpc_predict_v2_pb2 as oip, grpc_predict_v2_pb2_grpc as oip_grpc
from edgetune.runtime.imaging import Preprocessing, decode_rgb, normalize, resize_uint8
from tests.server.conftest import client_for

pytest.importorskip("tritonclient", reason="tritonclient is a dev dependency (make dev)")

# Run in its own interpreter: tritonclient registers the protocol's messages under its own file
# name, which cannot share a descriptor pool with ours.
TRITON = r"""
import json, sys
import numpy as np
import tritonclient.grpc as tc

target, token, ca, model, image_path, pixels_path, input_name = sys.argv[1:]
h = {"authorization": f"Bearer {token}"}
c = tc.InferenceServerClient(url=target, ssl=True, root_certificates=ca)
out = {"live": c.is_server_live(headers=h), "ready": c.is_server_ready(headers=h),
       "model_ready": c.is_model_ready(model, headers=h), "unknown_ready": c.is_model_ready("exp-none", headers=h),
       "metadata": c.get_model_metadata(model, headers=h, as_json=True)}
image = np.array([open(image_path, "rb").read()] * 2, dtype=object)
x = tc.InferInput("image", [2], "BYTES")
x.set_data_from_numpy(image)
r = c.infer(model, [x], outputs=[tc.InferRequestedOutput(n) for n in ("probabilities", "logits", "label",
                                                                      "class_index")], headers=h)
out["image"] = {n: r.as_numpy(n).tolist() for n in ("probabilities", "logits", "class_index")}
out["image"]["label"] = [b.decode() for b in r.as_numpy("label")]
p = tc.InferInput(input_name, [1, 3, 32, 32], "FP32")
p.set_data_from_numpy(np.load(pixels_path))
out["pixels"] = c.infer(model, [p], headers=h).as_numpy("probabilities").tolist()
bad = tc.InferInput("image", [2], "BYTES")
bad.set_data_from_numpy(image)
bad.set_shape([3])  # the shape now claims more elements than the raw bytes hold
try:
    c.infer(model, [bad], headers=h)
except tc.InferenceServerException as e:
    out["bad"] = [e.status(), e.message()]
out["live_without_token"] = c.is_server_live()
try:
    c.get_model_metadata(model)
except tc.InferenceServerException as e:
    out["no_token"] = e.status()
print(json.dumps(out))
"""


def test_triton_client_gets_the_numbers_predict_gives(secured, tmp_path):
    env = secured
    image = tmp_path / "a.png"
    image.write_bytes(env["image"])
    dev = client_for(env, "dev")
    [predicted] = dev.predict(env["export"].id, [env["image"]], include_logits=True)
    labels = list(env["export"].labels)
    probabilities = [0.0] * len(labels)
    for t in predicted.top:
        probabilities[t.index] = t.score
    alice = client_for(env, "alice")
    bundle = alice.download(env["export"].id, tmp_path / "bundle")
    alice.close()
    manifest = json.loads((bundle / "manifest.json").read_text())
    prep = Preprocessing.from_dict(manifest["preprocessing"])
    pixels = normalize(resize_uint8(decode_rgb(env["image"]), prep.size)[None], prep).astype(np.float32)
    np.save(tmp_path / "pixels.npy", pixels)
    proc = subprocess.run([sys.executable, "-c", TRITON, env["server"].target, env["tokens"]["dev"], str(env["ca"].pem),
                           env["export"].id, str(image), str(tmp_path / "pixels.npy"), manifest["inputs"][0]["name"]],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["live"] and out["ready"] and out["model_ready"] and not out["unknown_ready"]
    md = out["metadata"]
    assert md["name"] == env["export"].id and md["versions"] == ["fp32"] and md["platform"] == "onnxruntime_onnx"
    assert [(t["name"], t["datatype"]) for t in md["inputs"]] == [("image", "BYTES"),
                                                                  (manifest["inputs"][0]["name"], "FP32")]
    assert [t["name"] for t in md["outputs"]] == ["probabilities", "logits", "class_index", "label"]
    # Identical, not close: both front doors run the same predictions.
    assert out["image"]["probabilities"] == [probabilities] * 2
    assert out["image"]["logits"] == [list(predicted.logits)] * 2
    assert out["image"]["label"] == [predicted.top[0].label] * 2
    assert out["image"]["class_index"] == [predicted.top[0].index] * 2
    assert np.allclose(out["pixels"][0], probabilities, atol=1e-6)  # the same pixels, preprocessed here
    assert out["bad"][0] == "StatusCode.INVALID_ARGUMENT" and "inputs[0].raw" in out["bad"][1]
    assert out["live_without_token"] and out["no_token"] == "StatusCode.UNAUTHENTICATED"
    dev.close()


def infer_stub(env, name: str = "dev"):
    c = client_for(env, name)
    return c, oip_grpc.GRPCInferenceServiceStub(c.channel)


def test_typed_contents_and_size_checks(secured):
    env = secured
    c, stub = infer_stub(env)
    model = env["export"].id
    Tensor = oip.ModelInferRequest.InferInputTensor
    pixels = stub.ModelMetadata(oip.ModelMetadataRequest(name=model), timeout=10).inputs[1].name

    def infer(*inputs, raw=(), outputs=()):
        return stub.ModelInfer(oip.ModelInferRequest(
            model_name=model, inputs=list(inputs), raw_input_contents=list(raw),
            outputs=[oip.ModelInferRequest.InferRequestedOutputTensor(name=n) for n in outputs]), timeout=30)

    typed = infer(Tensor(name="image", datatype="BYTES", shape=[1],
                         contents=oip.InferTensorContents(bytes_contents=[env["image"]])), outputs=["probabilities"])
    assert [o.name for o in typed.outputs] == ["probabilities"] and list(typed.outputs[0].shape) == [1, 3]
    assert abs(sum(typed.outputs[0].contents.fp32_contents) - 1) < 1e-5 and not typed.raw_output_contents
    raw = infer(Tensor(name="image", datatype="BYTES", shape=[1]),
                raw=[struct.pack("<I", len(env["image"])) + env["image"]], outputs=["probabilities"])
    assert np.frombuffer(raw.raw_output_contents[0], "<f4").tolist() == list(typed.outputs[0].contents.fp32_contents)

    cases = [
        ((Tensor(name="image", datatype="BYTES", shape=[2],
                 contents=oip.InferTensorContents(bytes_contents=[env["image"]])),), (), "inputs[0].contents"),
        ((Tensor(name="image", datatype="STRING", shape=[1]),), (), "inputs[0].datatype"),
        ((Tensor(name="image", datatype="BYTES", shape=[-1]),), (), "inputs[0].shape"),
        ((Tensor(name="image", datatype="BYTES", shape=[1]),), (struct.pack("<I", 99) + b"x",), "inputs[0].raw"),
        ((Tensor(name=pixels, datatype="FP32", shape=[1, 3, 32, 32]),), (b"\0" * 100,), "inputs[0].raw"),
        ((Tensor(name=pixels, datatype="FP32", shape=[1, 3, 8, 8]),), (b"\0" * 768,), f"inputs.{pixels}"),
        ((Tensor(name="text", datatype="BYTES", shape=[1],
                 contents=oip.InferTensorContents(bytes_contents=[b"hi"])),), (), "inputs"),
        ((), (), "inputs"),
    ]
    for inputs, raw_contents, field in cases:
        with pytest.raises(grpc.RpcError) as e:
            infer(*inputs, raw=raw_contents)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details().startswith(field), \
            (field, e.value.details())
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelMetadata(oip.ModelMetadataRequest(name="exp-000000000000"), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and e.value.details().startswith("model_name:")
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(oip.ModelInferRequest(model_name=model, model_version="int8", inputs=[
            Tensor(name="image", datatype="BYTES", shape=[1],
                   contents=oip.InferTensorContents(bytes_contents=[env["image"]]))]), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and e.value.details().startswith("model_version:")
    c.close()


def test_hostile_tensors_are_invalid_argument_never_internal(secured):
    env = secured
    c, stub = infer_stub(env)
    model = env["export"].id
    Tensor = oip.ModelInferRequest.InferInputTensor
    pixels = stub.ModelMetadata(oip.ModelMetadataRequest(name=model), timeout=10).inputs[1].name
    cases = [
        (Tensor(name=pixels, datatype="FP32", shape=[0, 2**62, 2**62]), [b""], "inputs[0].shape"),
        (Tensor(name=pixels, datatype="FP32", shape=[1] * 65, contents=oip.InferTensorContents(fp32_contents=[1])),
         [], "inputs[0].shape"),
        (Tensor(name=pixels, datatype="BYTES", shape=[1], contents=oip.InferTensorContents(bytes_contents=[b"x"])),
         [], f"inputs.{pixels}"),
        (Tensor(name="image", datatype="UINT8", shape=[3], contents=oip.InferTensorContents(uint_contents=[1, 2, 3])),
         [], "inputs.image"),
        (Tensor(name="image", datatype="INT8", shape=[2], contents=oip.InferTensorContents(int_contents=[1000, -129])),
         [], "inputs[0].contents"),
        (Tensor(name="image", datatype="BYTES", shape=[2],
                contents=oip.InferTensorContents(bytes_contents=[env["image"], b"not an image"])), [], "inputs.image[1]"),
    ]
    for tensor, raw, field in cases:
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(oip.ModelInferRequest(model_name=model, inputs=[tensor], raw_input_contents=raw),
                            timeout=30)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details().startswith(field), \
            (field, e.value.details())
    with pytest.raises(grpc.RpcError) as e:  # outputs are checked before anything runs
        stub.ModelInfer(oip.ModelInferRequest(model_name=model, outputs=[
            oip.ModelInferRequest.InferRequestedOutputTensor(name="nope")]), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details().startswith("outputs:")
    c.close()
