"""Hyperparameter search with Optuna over the training config.

    python scripts/search.py                                   # configs/search/default.yaml
    python scripts/search.py search.n_trials=40 search.storage=outputs/search/study.db
    python scripts/search.py search=default model=tiny trainer.max_epochs=2

Arguments: ``search=NAME`` picks configs/search/NAME.yaml; ``search.KEY=VALUE`` changes a
search setting (``search.params.trainer.max_epochs.high=4`` one bound of a parameter);
every other argument is a Hydra override applied to each trial's training config, as for
scripts/train.py. See docs/performance.md.
"""

import logging
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

from scrclf.errors import EXIT_USER_ERROR, ScrClfError, one_line
from scrclf.training.search import run_search

ROOT = Path(__file__).resolve().parents[1]


def split_args(argv: list[str]) -> tuple[str, list[str], list[str]]:
    """(search config name, search.* dotlist, training overrides)."""
    name, search_args, train_args = "default", [], []
    for arg in argv:
        if arg.startswith("search="):
            name = arg.split("=", 1)[1]
        elif arg.startswith("search."):
            search_args.append(arg[len("search.") :])
        else:
            train_args.append(arg)
    return name, search_args, train_args


def main(argv: list[str]) -> None:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    name, search_args, train_args = split_args(argv)
    path = ROOT / "configs" / "search" / f"{name}.yaml"
    if not path.is_file():
        sys.exit(f"search={name}: no {path.relative_to(ROOT)}")
    # Parameter names contain dots (trainer.learning_rate), so search.params.NAME.FIELD=V is
    # split at its last dot instead of being read as a nested path.
    plain = [a for a in search_args if not a.startswith("params.")]
    cfg = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(plain))
    search_cfg = OmegaConf.to_container(cfg, resolve=True)
    for arg in search_args:
        if arg.startswith("params."):
            key, _, value = arg[len("params.") :].partition("=")
            name, _, field = key.rpartition(".")
            if not name:
                sys.exit(f"search.params.{key}: give search.params.NAME.FIELD=VALUE")
            parsed = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={value}"]))["v"]
            search_cfg.setdefault("params", {}).setdefault(name, {})[field] = parsed
    out_dir = search_cfg.pop("out_dir", None)
    summary = run_search(search_cfg, train_args, config_dir=ROOT / "configs", out_dir=out_dir)
    print((Path(summary["out_dir"]) / "trials.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    os.environ.setdefault("PROJECT_ROOT", str(ROOT))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        main(sys.argv[1:])
    except ScrClfError as err:  # a problem the user can fix; anything else is a bug
        print(f"search: error: {one_line(err)}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
