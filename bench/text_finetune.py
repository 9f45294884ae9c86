"""MiniLM on real SMS spam: LoRA vs full fine-tune, edgetune's recipe vs a plain PyTorch loop.

Data: ``../shared/data/sms_spam/SMSSpamCollection.tsv`` (5,574 labelled SMS, 13% spam), edgetune's
stratified 20% validation split. Base weights: all-MiniLM-L6-v2 from the registry package.

Each configuration runs in its own process (so peak RSS is its own):
  - edgetune ``train_text`` with LoRA for ``--epochs`` (default 2): macro-F1 per epoch (goal >= 0.97)
  - a plain PyTorch loop with the same model, peft config, tokenization, batches and optimizer
  - the same pair for a full fine-tune, one epoch each
Epoch times are compared side by side (goal: edgetune <= 1.05x the plain loop). Training passes
are timed without validation; the plain loop's validation is timed separately.

    .venv/bin/python bench/text_finetune.py [--epochs 2] [--limit N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sms_spam" / "SMSSpamCollection.tsv"
FIELDS = {"data.text_field": "SMS", "data.label_field": "Label"}


def _config(method: str, epochs: int, data: str):
    from edgetune.trainers.config import load_config

    return load_config(overrides={"task": "text_classification", "method": method, "model.arch": "bert",
                                  "model.weights": "all-minilm-l6-v2", "data.path": data, "optim.epochs": epochs,
                                  "device": "cpu", **FIELDS})


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_edgetune(method: str, epochs: int, data: str) -> dict:
    from edgetune.trainers.recipes.text_classification import train_text

    cfg = _config(method, epochs, data)
    with tempfile.TemporaryDirectory() as tmp:
        result = train_text(cfg, Path(tmp) / "run")
    r = result.report
    return {"who": "edgetune", "method": method, "trainable_params": r["trainable_params"],
            "total_params": r["total_params"],
            "epochs": [{"epoch": h["epoch"], "train_seconds": h["train_seconds"], "seconds": h["seconds"],
                        "val_macro_f1": h["val_macro_f1"], "val_accuracy": h["val_accuracy"]} for h in r["history"]],
            "per_class": r["final"]["per_class"], "peak_rss_mb": _peak_rss_mb()}


def run_plain(method: str, epochs: int, data: str) -> dict:
    """The loop a user would write by hand: no edgetune recipe, same ingredients."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from edgetune.trainers.fit import seed_everything
    from edgetune.trainers.metrics import confusion_matrix, summarize
    from edgetune.trainers.methods import apply_method, trainable_parameters
    from edgetune.trainers.data.tokenize import TokenizedRows, encode, pad_collate
    from edgetune.trainers.data.texts import TextFields, load_text_data
    from edgetune.trainers.models.text import create_text_model
    from edgetune.trainers.models.weights import resolve_weights

    cfg = _config(method, epochs, data)
    g, _ = seed_everything(cfg.seed)
    train, val, report = load_text_data(data, None, cfg.task, 0.2, False, cfg.seed,
                                        TextFields(text="SMS", label="Label"))
    classes = report.classes
    model, tok, _ = create_text_model(cfg.task, "bert", resolve_weights("bert", "all-minilm-l6-v2"),
                                      len(classes), cfg.seed, train.inputs)
    model = apply_method(model, cfg)
    trainable, total = trainable_parameters(model)
    label = {c: i for i, c in enumerate(classes)}
    collate = pad_collate(tok.pad_token_id)
    tr_ids, _ = encode(tok, train.inputs, cfg.data.max_length)
    va_ids, _ = encode(tok, val.inputs, cfg.data.max_length)
    loader = DataLoader(TokenizedRows(tr_ids, [label[y] for y in train.targets]), batch_size=cfg.optim.batch_size,
                        shuffle=True, generator=g, collate_fn=collate)
    val_loader = DataLoader(TokenizedRows(va_ids, [label[y] for y in val.targets]), batch_size=64, collate_fn=collate)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.optim.lr,
                            weight_decay=cfg.optim.weight_decay)
    out = []
    for epoch in range(1, epochs + 1):
        t0 = time.monotonic()
        model.train()
        for ids, mask, y in loader:
            loss = F.cross_entropy(model(input_ids=ids, attention_mask=mask).logits, y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        train_seconds = time.monotonic() - t0
        model.eval()
        preds, labels = [], []
        with torch.inference_mode():
            for ids, mask, y in val_loader:
                preds.append(model(input_ids=ids, attention_mask=mask).logits.argmax(1))
                labels.append(y)
        s = summarize(confusion_matrix(torch.cat(labels).numpy(), torch.cat(preds).numpy(), len(classes)))
        out.append({"epoch": epoch, "train_seconds": train_seconds, "seconds": time.monotonic() - t0,
                    "val_macro_f1": s["macro_f1"], "val_accuracy": s["accuracy"]})
    return {"who": "plain", "method": method, "trainable_params": trainable, "total_params": total,
            "epochs": out, "peak_rss_mb": _peak_rss_mb()}


def _subprocess(who: str, method: str, epochs: int, data: str) -> dict:
    cmd = [sys.executable, __file__, "--one", who, "--method", method, "--epochs", str(epochs), "--data", data]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{who} {method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2, help="LoRA epochs (the goal is macro-F1 >= 0.97 within 2)")
    ap.add_argument("--one", choices=["edgetune", "plain"], help=argparse.SUPPRESS)
    ap.add_argument("--method", default="lora", help=argparse.SUPPRESS)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--limit", type=int, help="use the first N rows only (a quick smoke run)")
    ap.add_argument("--json", help="write all results here")
    args = ap.parse_args()
    if args.one:
        fn = run_edgetune if args.one == "edgetune" else run_plain
        print(json.dumps(fn(args.method, args.epochs, args.data)))
        return
    data = args.data
    if not Path(data).is_file():
        print(f"skipped: {data} not found (this benchmark needs ../shared/data/sms_spam)")
        return
    if args.limit:
        lines = Path(data).read_text().splitlines()[: args.limit + 1]
        data = str(Path(tempfile.mkdtemp()) / "sms.tsv")
        Path(data).write_text("\n".join(lines) + "\n")
    # Side by side, alternating who goes first, so drift on a shared VM hits both.
    runs = [_subprocess("plain", "lora", 1, data), _subprocess("edgetune", "lora", args.epochs, data),
            _subprocess("edgetune", "full", 1, data), _subprocess("plain", "full", 1, data)]
    print(f"{'run':<16}{'trainable':>12}{'peak RSS MB':>13}{'epoch 1 train s':>17}{'epoch 1 s':>11}"
          f"{'macro-F1 by epoch':>24}")
    for r in runs:
        e1 = r["epochs"][0]
        f1 = ", ".join(f"{e['val_macro_f1']:.4f}" for e in r["epochs"])
        print(f"{r['who'] + ' ' + r['method']:<16}{r['trainable_params']:>12,}{r['peak_rss_mb']:>13.0f}"
              f"{e1['train_seconds']:>17.1f}{e1['seconds']:>11.1f}{f1:>24}")
    for method in ("lora", "full"):
        ours = next(r for r in runs if r["who"] == "edgetune" and r["method"] == method)["epochs"][0]
        plain = next(r for r in runs if r["who"] == "plain" and r["method"] == method)["epochs"][0]
        print(f"{method}: edgetune / plain epoch time: training pass {ours['train_seconds'] / plain['train_seconds']:.3f}x,"
              f" with validation {ours['seconds'] / plain['seconds']:.3f}x")
    lora = next(r for r in runs if r["who"] == "edgetune" and r["method"] == "lora")
    best = max(e["val_macro_f1"] for e in lora["epochs"])
    print(f"edgetune LoRA best macro-F1 within {args.epochs} epoch(s): {best:.4f} (goal >= 0.97); per class: "
          + ", ".join(f"{c['class']} recall {c['recall']:.3f}" for c in lora["per_class"]))
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
