"""What TLS and token auth cost Predict, and the Open Inference Protocol against Predict, side by side.

One server trains and exports EfficientNet-Lite0 on the digits at 64 px (one epoch), then two
servers share its data dir: one plaintext without auth, one with TLS and bearer tokens. The same
PNG is classified over each, interleaved round by round so drift hits both; then ModelInfer (the
same image as a BYTES tensor) against Predict on the plaintext server. Batch 1, loopback, CPU.

    .venv/bin/python bench/grpc_security.py [--requests 400] [--rounds 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.server.certs: certificates made here

from edgetune.oip import grpc_predict_v2_pb2 as oip, grpc_predict_v2_pb2_grpc as oip_grpc  # noqa: E402
from edgetune.server.auth import add_token  # noqa: E402
from edgetune.server.transport.client import EdgetuneClient  # noqa: E402
from grpc_predict import latencies, start_server as start, trained_export  # noqa: E402  (bench/ is on the path)
from tests.server.certs import CA  # noqa: E402


def row(name: str, ms: list[float], seconds: float) -> str:
    return (f"{name:<34}{np.percentile(ms, 50):>8.3f}{np.percentile(ms, 99):>8.3f}"
            f"{len(ms) / seconds:>9.0f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400, help="per round and server")
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        proc, target = start(tmp / "data")
        client = EdgetuneClient(target)
        client.wait_ready()
        exp, image = trained_export(client, tmp)

        ca = CA(tmp / "pki")
        cert = ca.issue("server", "localhost", server=True)
        token = add_token(tmp / "tokens.yaml", "bench", ["inference"])
        secure_proc, secure_target = start(tmp / "data", "--auth-tokens", str(tmp / "tokens.yaml"), "--tls-cert",
                                           str(cert.cert), "--tls-key", str(cert.key))
        secure = EdgetuneClient(secure_target, token=token, tls_ca=ca.pem, server_name="localhost")
        secure.wait_ready()
        infer = oip_grpc.GRPCInferenceServiceStub(client.channel).ModelInfer
        request = oip.ModelInferRequest(model_name=exp.id, inputs=[oip.ModelInferRequest.InferInputTensor(
            name="image", datatype="BYTES", shape=[1], contents=oip.InferTensorContents(bytes_contents=[image]))],
            outputs=[oip.ModelInferRequest.InferRequestedOutputTensor(name="probabilities")])
        calls = {"Predict, plaintext, no auth": lambda: client.predict(exp.id, [image], top_k=1),
                 "Predict, TLS + bearer token": lambda: secure.predict(exp.id, [image], top_k=1),
                 "ModelInfer (OIP), plaintext": lambda: infer(request, timeout=30)}
        results = {name: ([], 0.0) for name in calls}
        try:
            for fn in calls.values():
                latencies(fn, 0, warm=30)  # sessions, connections, TLS handshake
            for _ in range(args.rounds):
                for name, fn in calls.items():
                    t0 = time.perf_counter()
                    ms = latencies(fn, args.requests, warm=0)
                    results[name] = (results[name][0] + ms, results[name][1] + time.perf_counter() - t0)
            print(f"# efficientnet_lite0 at 64px, batch 1, CPU, {os.cpu_count()} cores, loopback; "
                  f"{args.rounds} interleaved rounds x {args.requests} requests")
            print(f"{'':<34}{'p50 ms':>8}{'p99 ms':>8}{'req/s':>9}")
            for name, (ms, seconds) in results.items():
                print(row(name, ms, seconds))
            plain, tls = (np.percentile(results[n][0], 50) for n in list(calls)[:2])
            oip_p50 = np.percentile(results["ModelInfer (OIP), plaintext"][0], 50)
            print(f"TLS + auth add {tls - plain:.3f} ms at p50 ({tls / plain:.2f}x); "
                  f"ModelInfer / Predict at p50: {oip_p50 / plain:.2f}x")
        finally:
            for c in (client, secure):
                c.close()
            for p in (secure_proc, proc):
                p.terminate()
                p.wait(timeout=30)


if __name__ == "__main__":
    main()
