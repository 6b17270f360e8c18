"""Evaluate a model: ``python scripts/evaluate.py model=PATH [split=test | file=PATH]``.

Examples:
    python scripts/evaluate.py model=outputs/train/2026-01-01_12-00-00_000000
    python scripts/evaluate.py model=models/scr-minilm file=my_annotations.jsonl profile=true
    python scripts/evaluate.py model=RUN recalibrate=true report_dir=reports/eval-run

``model=PATH`` is shorthand for ``model_path=PATH``. The report folder is printed at the end;
see docs/evaluation.md for what it holds.
"""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from scrclf.errors import EXIT_USER_ERROR, ScrClfError, one_line


def _translate(argv: list[str]) -> list[str]:
    """``model=PATH`` (the documented form) -> ``model_path=PATH``: ``model`` is a config group."""
    return [f"model_path={a.split('=', 1)[1]}" if a.startswith("model=") else a for a in argv]


@hydra.main(config_path="../configs", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> str:
    from scrclf.evaluation.evaluate import evaluate_from_config, headline_line

    try:
        out = evaluate_from_config(cfg)
    except ScrClfError as err:  # a problem the user can fix; anything else is a bug
        print(f"evaluate: error: {one_line(err)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    import json

    result = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    for note in result["data"]["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(headline_line(result))
    print(f"report written to {out}", flush=True)
    return str(out)


if __name__ == "__main__":
    os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))
    sys.argv = [sys.argv[0], *_translate(sys.argv[1:])]
    main()
