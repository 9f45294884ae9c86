"""Manifest parity reports -> protobuf messages, including the values JSON cannot hold."""

from edgetune.server.transport.convert import parity_report


def test_a_failed_report_with_non_finite_errors_and_no_decisions_converts():
    parity = {"passed": False, "precision": "fp32", "atol": 5e-4, "rtol": 1e-3, "margin": None,
              "max_abs_diff": None, "max_rel_diff": None, "top1_agreement": None, "top1_compared": 0,
              "providers": ["CPUExecutionProvider"], "problems": ["labels differ from training's: output 0"],
              "cases": [{"name": "random inputs, batch 1", "reference": "pytorch", "candidate": "onnxruntime",
                         "batch_size": 1, "samples": 4, "max_abs_diff": None, "max_rel_diff": None, "margin": None,
                         "top1_compared": 0, "top1_agreed": 0, "ties": 0, "compared": "pytorch vs onnxruntime",
                         "top1_agreement": None, "passed": False}]}
    msg = parity_report(parity)
    assert not msg.passed and msg.top1_agreement == 0 and msg.top1_compared == 0 and msg.rtol == 1e-3
    assert list(msg.problems) == parity["problems"] and list(msg.providers) == ["CPUExecutionProvider"]
    case = msg.cases[0]
    assert case.compared == "pytorch vs onnxruntime" and case.samples == 4 and not case.passed


def test_a_report_from_before_margins_keeps_its_verdict():
    old = {"passed": True, "atol": 1e-4, "max_abs_diff": 3e-5, "max_rel_diff": 1e-6, "top1_agreement": 1.0,
           "providers": ["CPUExecutionProvider"],
           "cases": [{"name": "validation images, batch 1", "batch_size": 1, "samples": 8, "max_abs_diff": 3e-5,
                      "max_rel_diff": 1e-6, "top1_agreement": 1.0, "compared": "pytorch vs onnxruntime"}]}
    msg = parity_report(old)
    assert msg.passed and msg.cases[0].passed and msg.top1_agreement == 1.0 and msg.atol == 1e-4
