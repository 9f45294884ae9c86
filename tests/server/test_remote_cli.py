"""`edgetune remote ...` against a real server: column mapping at upload, the jobs table, watch
output in a log, cancel on a finished job, and a closed pipe."""

import json
import sys

from edgetune.cli.main import main
from tests.conftest import write_topic_texts


def _tsv(tmp_path):
    """Topic rows as a TSV whose header is not the standard text,label (like the SMS collection)."""
    rows = [json.loads(line) for line in write_topic_texts(tmp_path / "t.jsonl", rows=120).read_text().splitlines()]
    path = tmp_path / "topics.tsv"
    path.write_text("Label\tSMS\n" + "".join(f"{r['label']}\t{r['text']}\n" for r in rows))
    return path


def test_remote_upload_submit_watch_jobs_cancel(server, tmp_path, capsys):
    data = _tsv(tmp_path)

    assert main(["remote", "upload", str(data), "--server", server.target]) == 2
    err = capsys.readouterr().err  # the standard names are not there, and the error says how to map them
    assert "it has ['Label', 'SMS']" in err and "--text-field" in err

    assert main(["remote", "upload", str(data), "--server", server.target, "--text-field", "SMS",
                 "--label-field", "Label"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.endswith("text_classification, 120 examples (stratified split), 3 classes"), line
    dataset = line.split(":")[0]

    assert main(["remote", "submit", "--server", server.target, "--dataset", dataset, "--task",
                 "text_classification", "--model", "bert", "--weights", "random", "--method", "lora",
                 "--epochs", "1", "--max-length", "32", "--batch-size", "16", "--watch"]) == 0
    out = capsys.readouterr().out
    job = out.splitlines()[0]
    assert f"job {job}: SUCCEEDED" in out and "epoch 1/1 train_loss" in out and "val_macro_f1" in out
    assert " step " not in out  # not a terminal: one line per epoch, no step lines
    assert "run: " not in out and "/jobs/" not in out  # the summary names no server path

    assert main(["remote", "jobs", "--server", server.target]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:6] == ["JOB", "STATE", "TASK", "MODEL", "METHOD", "PROGRESS"]
    assert table[1].split()[:7] == [job, "SUCCEEDED", "text_classification", "bert", "lora", "1/1", "epochs"]

    assert main(["remote", "cancel", job, "--server", server.target]) == 0
    assert capsys.readouterr().out.strip() == f"job {job} had already ended SUCCEEDED: nothing was cancelled"


class _ClosedPipe:
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")


def test_a_reader_that_goes_away_ends_the_command_quietly(server, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["remote", "jobs", "--server", server.target]) == 0
    assert "Broken pipe" not in capsys.readouterr().err
