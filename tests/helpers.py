"""Helpers shared by the tests: paths, the toy corpus generator, Compose-API configs and
export-copy tools. Fixtures built on them live in conftest.py."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"


def run_script(
    script: str,
    *args: str,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    timeout: int = 300,
) -> subprocess.CompletedProcess[str]:
    """``python <ROOT>/<script> args...`` in a child process, its output captured as text."""
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# Each label is signalled by its own words; the rest of the text is shared filler.
THEME_WORDS = {
    "procedures_policy": "procedure protocol",
    "training_learning": "training briefing",
    "supervision_support": "supervision reflective",
    "assessment_risk": "assessment curiosity",
    "information_sharing": "referral strategy",
    "records_systems": "chronology flag",
    "audit_assurance": "audit assurance",
    "workforce_resources": "caseload recruitment",
    "child_family_engagement": "voice fathers",
    "national_structural": "department legislation",
    "other": "publication disciplinary",
}
EVIDENCE_WORDS = {
    "research": "studies show",
    "guidance": "statutory guidance",
    "local_data": "local audit found",
    "single_case": "in this case",
    "none_stated": "panel",
}
STRENGTH_WORDS = {"weak": "remind", "intermediate": "checklist", "strong": "redesign"}
FILLER = (
    "the board agencies should ensure that practitioners partners children families "
    "services work together with respect to safeguarding practice across the area"
).split()


def load_benchmark(name: str):
    """A script of ``benchmarks/`` imported as a module (they are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def toy_rows(n_reviews: int, per_review: int, seed: int, prefix: str) -> list[dict]:
    rnd = random.Random(seed)
    themes, evidence, strengths = list(THEME_WORDS), list(EVIDENCE_WORDS), list(STRENGTH_WORDS)
    rows = []
    for r in range(n_reviews):
        review = f"{prefix}{r:03d}"
        for i in range(per_review):
            k = len(rows)
            chosen = [themes[k % len(themes)]]
            if rnd.random() < 0.3:
                extra = rnd.choice(themes)
                if extra not in chosen:
                    chosen.append(extra)
            ev, st = evidence[(k // 3) % len(evidence)], strengths[(k // 2) % len(strengths)]
            words = rnd.sample(FILLER, 6)
            for t in chosen:
                words += THEME_WORDS[t].split()
            words += STRENGTH_WORDS[st].split()
            rnd.shuffle(words)
            finding = " ".join(EVIDENCE_WORDS[ev].split() + rnd.sample(FILLER, 4))
            rows.append(
                {
                    "id": f"{review}-{i + 1:02d}",
                    "review_id": review,
                    "text": " ".join(words),
                    "finding": finding if k % 4 else None,
                    "themes": chosen,
                    "evidence": ev,
                    "action_strength": st,
                    "addressee": rnd.choice(["board", "police", "health"]),
                    "review_year": 2010 + k % 14,
                    "review_type": "SCR",
                }
            )
            if ev == "none_stated":
                rows[-1]["finding"] = None
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def compose_train(overrides: list[str] | None = None, config_name: str = "train"):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides or [], return_hydra_config=False)
    return cfg


def train_tiny(corpus: Path, run: Path, loop: str, *extra: str) -> dict:
    """Train one quick epoch of the tiny model on ``corpus`` into ``run``, evaluated on
    validation, with the Trainer (``loop="trainer"``) or the lean loop on the CPU
    (``"lean"``), plus the ``extra`` overrides; the run's summary."""
    from scrclf.training import train

    overrides = [
        "model=tiny",
        f"data.dir={corpus}",
        "trainer.max_epochs=1",
        "trainer.learning_rate=5e-3",
        "trainer.logging_steps=50",
        *extra,
        "eval_splits=[validation]",
        f"paths.output_dir={run}",
    ]
    if loop == "lean":
        overrides += ["trainer=gpu_fast", "trainer.device=cpu", "trainer.num_threads=1"]
    return train(compose_train(overrides))


@dataclass(frozen=True)
class TinyExport:
    run_dir: Path
    export_dir: Path
    corpus: Path


def rewrite_manifest(root: Path) -> None:
    """Make an export's manifest vouch for its current files (after a test changed them)."""
    from scrclf.inference.classifier import build_manifest

    (root / "manifest.json").write_text(json.dumps(build_manifest(root), indent=2))


def copy_export(export: TinyExport, dest: Path) -> Path:
    """A private copy of the export, without its wheel, that a test may damage."""
    import shutil

    shutil.copytree(export.export_dir, dest, ignore=shutil.ignore_patterns("dist"))
    rewrite_manifest(dest)
    return dest


def readme_block(route: str) -> str:
    """The Python block that follows ``<!-- route: ROUTE -->`` in the README."""
    import re

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    marker = text.index(f"<!-- route: {route} -->")
    return re.search(r"```python\n(.*?)```", text[marker:], re.S).group(1)
