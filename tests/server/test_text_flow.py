"""Text classification over a real socket: upload rows -> job -> export (three-way parity) ->
download -> Predict texts; and the errors a text client can cause."""

import json

import grpc
import pytest

from edgetune.v1 import jobs_pb2
from tests.conftest import write_pattern_folder, write_reverse_pairs, write_topic_texts

TINY_TEXT = dict(task="text_classification", base_model="bert", weights="random", method="lora", epochs=6,
                 max_length=32, batch_size=16, learning_rate=1e-2)


def test_text_classification_flow(server, tmp_path):
    client = server.client()
    ds = client.upload_dataset(write_topic_texts(tmp_path / "topics.jsonl"), name="topics")
    assert jobs_pb2.Task.Name(ds.report.task) == "TASK_TEXT_CLASSIFICATION" and ds.report.rows == 240
    assert [c.label for c in ds.report.classes] == ["food", "sport", "tech"]

    job = client.create_job(ds.id, **TINY_TEXT)
    assert jobs_pb2.Task.Name(job.task) == "TASK_TEXT_CLASSIFICATION" and job.hyperparameters.max_length == 32
    list(client.watch(job.id))
    done = client.get_job(job.id)
    assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.error

    exp = client.export(job.id)
    assert exp.valid and exp.parity.passed and list(exp.labels) == ["food", "sport", "tech"]
    compared = {c.compared for c in exp.parity.cases}
    assert {"merged pytorch vs onnxruntime", "peft unmerged vs merged pytorch", "peft unmerged vs onnxruntime"} <= compared
    assert not done.warnings and exp.parity.margin <= 1 and exp.parity.top1_compared > 0

    bundle = client.download(exp.id, tmp_path / "dl")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert (bundle / "tokenizer" / "tokenizer.json").is_file() and manifest["tokenization"]["max_length"] == 32

    results = client.predict(exp.id, texts=["pizza pasta oven", "goal match team", "laptop code"], top_k=3)
    assert len(results) == 3 and all(len(r.top) == 3 for r in results)
    assert all(abs(sum(t.score for t in r.top) - 1) < 1e-4 for r in results)

    with pytest.raises(grpc.RpcError) as e:
        client.predict(exp.id, [b"\x89PNG"], top_k=1)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "images" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        client.predict(exp.id, texts=["fine", "  "], top_k=1)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "texts[1]" in e.value.details()


def test_text_errors_name_the_field_and_lose_nothing(server, tmp_path):
    client = server.client()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok", "label": "a"}\n{"text": "", "label": "b"}\n')
    with pytest.raises(grpc.RpcError) as e:
        client.upload_dataset(bad)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "row 2" in e.value.details()
    cols = tmp_path / "cols.csv"
    cols.write_text("message,category\nhello,a\n")
    with pytest.raises(grpc.RpcError) as e:
        client.upload_dataset(cols)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "text,label" in e.value.details()

    text_ds = client.upload_dataset(write_topic_texts(tmp_path / "t.jsonl", rows=60))
    image_ds = client.upload_dataset(write_pattern_folder(tmp_path / "pat"))
    with pytest.raises(grpc.RpcError) as e:  # a text dataset for an image job
        client.create_job(text_ds.id, base_model="resnet18", weights="random")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details().startswith("dataset_id")
    with pytest.raises(grpc.RpcError) as e:
        client.create_job(image_ds.id, **TINY_TEXT)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details().startswith("dataset_id")
    with pytest.raises(grpc.RpcError) as e:  # an image architecture for a text task
        client.create_job(text_ds.id, **{**TINY_TEXT, "base_model": "resnet18"})
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details().startswith("base_model")
    with pytest.raises(grpc.RpcError) as e:  # IA3 is a text method
        client.create_job(image_ds.id, base_model="resnet18", weights="random", method="ia3")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details().startswith("method")
    assert client.list_jobs() == []  # nothing was queued, and the server still serves
    assert {m.arch for m in client.list_base_models()} >= {"bert", "efficientnet_lite0"}


def test_generation_flow_streams_tokens(server, tmp_path):
    from edgetune.runtime import TextGenerator

    client = server.client()
    ds = client.upload_dataset(write_reverse_pairs(tmp_path / "rev.jsonl", rows=60))
    assert jobs_pb2.Task.Name(ds.report.task) == "TASK_TEXT_GENERATION" and ds.report.rows == 60
    job = client.create_job(ds.id, task="text_generation", base_model="llama", weights="random", method="lora",
                            epochs=1, max_length=48, learning_rate=1e-2)
    list(client.watch(job.id))
    done = client.get_job(job.id)
    assert done.state == jobs_pb2.JOB_STATE_SUCCEEDED, done.error
    assert done.best.val_perplexity > 1.0
    exp = client.export(job.id)
    assert exp.valid and jobs_pb2.Task.Name(exp.task) == "TASK_TEXT_GENERATION"

    pieces = list(client.generate(exp.id, "reverse: red cat sun", max_new_tokens=5))
    assert len(pieces) <= 5 and [p.index for p in pieces] == list(range(len(pieces)))
    local = TextGenerator(client.download(exp.id, tmp_path / "dl"), device="cpu")
    assert [p.token_id for p in pieces] == [t for t, _ in local.stream("reverse: red cat sun", 5)]
    assert "".join(p.text for p in pieces) == local.generate("reverse: red cat sun", 5)

    with pytest.raises(grpc.RpcError) as e:
        client.predict(exp.id, texts=["reverse: a b c"])
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "Generate" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        list(client.generate(exp.id, "  "))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details().startswith("prompt")
    with pytest.raises(grpc.RpcError) as e:
        list(client.generate(exp.id, "hi", max_new_tokens=5000))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details().startswith("max_new_tokens")
