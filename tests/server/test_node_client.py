"""The contract works outside Python: the Node.js client drives a real server end to end."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import write_pattern_folder, write_topic_texts

NODE_DIR = Path(__file__).resolve().parents[2] / "clients" / "node"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir(),
    reason="needs node and `npm ci` in clients/node (make test does both)")


def test_node_client_end_to_end(server, tmp_path):
    data = write_pattern_folder(tmp_path / "pat")
    archive = shutil.make_archive(str(tmp_path / "pat"), "zip", root_dir=data)
    image = next((data / "c").glob("*.png"))
    proc = subprocess.run(["node", "e2e.js", server.target, archive, str(image)], cwd=NODE_DIR,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["state"] == "JOB_STATE_SUCCEEDED" and out["classes"] == ["a", "b", "c"]
    assert out["events"]["state"] >= 3 and out["events"]["epoch"] == 2
    assert out["parityPassed"] and out["parityMargin"] <= 1 and len(out["top"]) == 3
    assert out["models"] >= 8


def test_node_client_sees_status_codes(server, tmp_path):
    script = ("import { EdgetuneClient } from './client.js';"
              "const c = new EdgetuneClient(process.argv[1]);"
              "try { await c.getJob('job-missing'); } catch (e) { console.log(JSON.stringify({code: e.code, "
              "details: e.details})); } finally { c.close(); }")
    proc = subprocess.run(["node", "--input-type=module", "-e", script, server.target], cwd=NODE_DIR,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["code"] == 5 and out["details"].startswith("job_id:")  # 5 = NOT_FOUND


def test_node_client_classifies_text(server, tmp_path):
    rows = write_topic_texts(tmp_path / "topics.jsonl")
    proc = subprocess.run(["node", "e2e_text.js", server.target, str(rows)], cwd=NODE_DIR,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["task"] == "TASK_TEXT_CLASSIFICATION" and out["rows"] == 240
    assert out["state"] == "JOB_STATE_SUCCEEDED" and out["exportTask"] == "TASK_TEXT_CLASSIFICATION"
    assert out["maxLength"] == 32 and "peft unmerged vs onnxruntime" in out["compared"]
    assert len(out["results"]) == 2 and all(len(r["top"]) == 2 for r in out["results"])
    assert {t["label"] for r in out["results"] for t in r["top"]} <= {"food", "sport", "tech"}


def test_node_client_with_a_token_over_mutual_tls(tmp_path):
    from tests.server.certs import CA
    from tests.server.conftest import ServerProcess
    from tests.server.test_security import add_token

    ca = CA(tmp_path / "pki")
    cert, mine = ca.issue("server", "localhost", server=True), ca.issue("client", "node", server=False)
    token = add_token(tmp_path / "tokens.yaml", "node-user", "jobs")
    server = ServerProcess(tmp_path / "data", "--auth-tokens", str(tmp_path / "tokens.yaml"), "--tls-cert",
                           str(cert.cert), "--tls-key", str(cert.key), "--tls-client-ca", str(ca.pem)).start()
    script = ("import { EdgetuneClient } from './client.js';"
              "const [target, token, ca, cert, key] = process.argv.slice(1);"
              "const tls = { tlsCa: ca, tlsCert: cert, tlsKey: key, serverName: 'localhost' };"
              "const out = {};"
              "const c = new EdgetuneClient(target, { token, ...tls });"
              "out.models = (await c.listBaseModels()).length;"
              "try { await c.getJob('job-missing'); } catch (e) { out.missing = e.code; }"
              "c.close();"
              "const anon = new EdgetuneClient(target, tls);"
              "try { await anon.listBaseModels(); } catch (e) { out.anonymous = e.code; out.details = e.details; }"
              "anon.close();"
              "console.log(JSON.stringify(out));")
    try:
        proc = subprocess.run(["node", "--input-type=module", "-e", script, server.target, token, str(ca.pem),
                               str(mine.cert), str(mine.key)], cwd=NODE_DIR, capture_output=True, text=True,
                              timeout=60)
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["models"] >= 8 and out["missing"] == 5  # NOT_FOUND
    assert out["anonymous"] == 16 and out["details"].startswith("authorization:")  # UNAUTHENTICATED
