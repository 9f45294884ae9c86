"""What the guard removes from replies: server paths in server-written text, nothing of the client's."""

from pathlib import Path

from edgetune.server.transport.guard import Redactor
from edgetune.v1 import datasets_pb2, jobs_pb2


def test_server_paths_leave_server_text_and_client_text_is_untouched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    r = Redactor.for_server(Path("data"), data / "cache")  # a relative --data-dir, as operators pass it
    event = jobs_pb2.JobEvent(log=f"data pass: 36 images, cache at {data}/cache/idx-1 (/opt/models/w.pt)")
    job = jobs_pb2.Job(error=f"worker died: open {data}/jobs/j/run/model.json failed", warnings=[f"{tmp_path}/x"])
    r.message(event)
    r.message(job)
    assert event.log == "data pass: 36 images, cache at <server>/idx-1 (<path>)"
    assert job.error == "worker died: open <server>/jobs/j/run/model.json failed" and job.warnings == ["<server>/x"]
    # Names, labels and words the client chose pass as they are, paths and all.
    ds = datasets_pb2.Dataset(name=f"{data}/mine", report=datasets_pb2.ValidationReport(
        classes=[datasets_pb2.ClassCount(label="/usr/share/cats")], warnings=["the training data is empty"]))
    r.message(ds)
    assert ds.name == f"{data}/mine" and ds.report.classes[0].label == "/usr/share/cats"
    assert ds.report.warnings == ["the training data is empty"]
    assert r.text("data.path: no rows; s3://b/tmp/y and org/data-v2") == "data.path: no rows; s3://b/tmp/y and org/data-v2"
