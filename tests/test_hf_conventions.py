"""The runtime's pieces inside the full install, and the Hugging Face conventions of an
export: a light ``import scrclf``, the tokenizers-only tokenizer, label maps per head, the
tokenizer's own length limit and the ``scrclf-classification`` pipeline."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

import scrclf
from scrclf.data.records import read_records, tokenize
from scrclf.inference.tokenizer import RuntimeTokenizer
from tests.helpers import readme_block

TEXTS = [
    "The board should ensure that staff receive annual training on neglect.",
    "Agencies must share information about missed appointments within one week.",
]
FINDINGS = ["Practitioners did not recognise the signs of neglect.", None]


def _rows(tiny_export):
    rows = [r.data for r in read_records(tiny_export.corpus / "test.jsonl")]
    return [r["text"] for r in rows], [r.get("finding") for r in rows]


def _labels(items):
    return [{task: v.get("labels", v.get("label")) for task, v in i.items()} for i in items]


def test_import_scrclf_loads_neither_torch_nor_transformers():
    code = (
        "import sys, scrclf, scrclf.cli.app, scrclf.inference.classifier\n"
        "print([m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_onnx_backend_tokenizes_without_transformers_exactly_as_transformers(tiny_export):
    from transformers import AutoTokenizer

    texts, findings = _rows(tiny_export)
    texts = [*texts, " ".join(texts[:20])]  # one far longer than max_seq_length
    findings = [*findings, " ".join(texts[20:40])]
    runtime = RuntimeTokenizer.from_folder(tiny_export.export_dir)
    reference = AutoTokenizer.from_pretrained(tiny_export.export_dir)
    for max_length in (256, 16):
        assert tokenize(runtime, texts, findings, max_length) == dict(
            tokenize(reference, texts, findings, max_length)
        )
    assert runtime.pad_token_id == reference.pad_token_id
    assert runtime.padding_side == reference.padding_side
    clf = scrclf.load(tiny_export.export_dir, backend="onnx")
    assert isinstance(clf.tokenizer, RuntimeTokenizer)


def test_config_names_the_labels_of_every_head(tiny_export):
    config = json.loads((tiny_export.export_dir / "config.json").read_text())
    tasks = {t["name"]: t["labels"] for t in config["tasks"]}
    assert {name: list(m.values()) for name, m in config["head_id2label"].items()} == tasks
    assert config["head_label2id"]["evidence"] == {
        label: i for i, label in enumerate(tasks["evidence"])
    }
    flat = [f"{name}.{label}" for name, labels in tasks.items() for label in labels]
    assert list(config["id2label"].values()) == flat
    assert not any(label.startswith("LABEL_") for label in config["id2label"].values())


def test_exported_tokenizer_cuts_at_the_model_length(tiny_export):
    from transformers import AutoTokenizer

    config = json.loads((tiny_export.export_dir / "config.json").read_text())
    saved = json.loads((tiny_export.export_dir / "tokenizer_config.json").read_text())
    assert saved["model_max_length"] == config["max_seq_length"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_export.export_dir)
    ids = tokenizer("word " * 2000, truncation=True)["input_ids"]
    assert len(ids) == config["max_seq_length"]


def test_pipeline_gives_the_labels_of_scrclf_load(tiny_export):
    from transformers import pipeline

    texts, findings = _rows(tiny_export)
    texts, findings = texts[:20] + TEXTS, findings[:20] + FINDINGS
    classify = pipeline("scrclf-classification", model=str(tiny_export.export_dir))
    got = classify([{"text": t, "finding": f} for t, f in zip(texts, findings, strict=True)])
    expected = scrclf.load(tiny_export.export_dir, backend="onnx").predict(texts, findings)
    assert _labels(got) == _labels(expected)
    assert classify(TEXTS[1])["themes"]["labels"] == expected[-1]["themes"]["labels"]
    with pytest.raises(scrclf.errors.DataError, match="empty"):
        classify("   ")


def test_pipeline_is_registered_once_transformers_is_imported_after_scrclf(tiny_export):
    code = (
        "import sys, scrclf\n"
        "assert 'transformers' not in sys.modules\n"
        "from transformers import pipeline\n"
        f"p = pipeline('scrclf-classification', model={str(tiny_export.export_dir)!r})\n"
        f"print(p({TEXTS[0]!r})['evidence']['label'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    expected = scrclf.load(tiny_export.export_dir).predict(TEXTS[:1])[0]["evidence"]["label"]
    assert out.stdout.strip().splitlines()[-1] == expected


def test_readme_pipeline_route_runs_and_matches_scrclf_load(tiny_export, tmp_path):
    code = readme_block("pipeline").replace(
        '"models/scr-minilm"', repr(str(tiny_export.export_dir))
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    got = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    expected = scrclf.load(tiny_export.export_dir).predict(
        ["The Board should seek assurance that supervision is in place."],
        ["Research shows supervision supports professional judgement."],
    )
    assert _labels([got]) == _labels(expected)


def test_feature_extraction_pipeline_gives_the_pooled_sentence_embedding(tiny_export):
    import torch
    from transformers import AutoModel, AutoTokenizer, pipeline

    extract = pipeline("feature-extraction", model=str(tiny_export.export_dir))
    got = torch.tensor(extract(TEXTS[0]))
    model = AutoModel.from_pretrained(tiny_export.export_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_export.export_dir)
    with torch.no_grad():
        out = model(**tokenizer(TEXTS[0], return_tensors="pt"))
    assert got.shape == (1, model.config.encoder["hidden_size"])
    assert torch.allclose(got, out.sentence_embedding, atol=1e-5)
    assert out.to_tuple()[0] is out.sentence_embedding  # what the pipeline takes


@pytest.mark.parametrize(
    "first", ["scrclf.modeling.model", "scrclf.inference.pipeline", "scrclf.modeling.encoders"]
)
def test_pipeline_task_is_registered_whichever_scrclf_module_is_imported_first(first):
    # A scrclf module that imports transformers itself, before the model classes exist, must
    # not leave the pipeline task unregistered.
    code = (
        f"import {first}\n"
        "from transformers.pipelines import PIPELINE_REGISTRY\n"
        "print('scrclf-classification' in PIPELINE_REGISTRY.get_supported_tasks())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "True"
