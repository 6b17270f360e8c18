"""Learning curve: the model and baselines trained on growing shares of the training reviews.

    python benchmarks/learning_curve.py                        # configs/learning_curve.yaml
    python benchmarks/learning_curve.py --systems tfidf_logreg --seeds 5
    python benchmarks/learning_curve.py --fractions 0.25,1 --seeds 1 trainer.max_epochs=2
    python benchmarks/learning_curve.py --out /tmp/lc model=tiny trainer.max_epochs=1

Trailing arguments are Hydra overrides of the training config (as for scripts/train.py),
used for the model system. Settings not given on the command line come from
configs/learning_curve.yaml. Results (JSON, Markdown, PNG, one file per point) go to
--out, default benchmarks/results/learning_curve/. Run the same command again to resume:
points already written are skipped. The full default run trains the model 12 times
(hours on two cores). The logic lives in scrclf.training.learning_curve.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the training config")
    parser.add_argument("--fractions", type=_floats, help="shares of the training reviews")
    parser.add_argument("--seeds", type=int, dest="n_seeds", help="repetitions per share")
    parser.add_argument("--systems", type=_names, help="model and/or baseline names")
    parser.add_argument("--eval-split", help="the split scored")
    parser.add_argument("--resamples", type=int, help="bootstrap resamples")
    parser.add_argument("--out", type=Path, help="output folder")
    parser.add_argument(
        "--keep-runs", action="store_true", help="keep the model run folders (large)"
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("PROJECT_ROOT", str(ROOT))
    from scrclf.errors import EXIT_USER_ERROR, ScrClfError, one_line
    from scrclf.training.learning_curve import CurveSettings, run_learning_curve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        base = CurveSettings.with_options(None, CONFIGS)
        options = {
            "fractions": args.fractions,
            "n_seeds": args.n_seeds,
            "systems": args.systems,
            "eval_split": args.eval_split,
            "train_overrides": args.overrides or None,
        }
        if args.resamples is not None:
            options["bootstrap"] = {**base.bootstrap.__dict__, "resamples": args.resamples}
        curve = CurveSettings.with_options(options, CONFIGS)
        out = args.out if args.out is not None else ROOT / curve.out_dir
        report = run_learning_curve(curve, out, keep_runs=args.keep_runs, configs=CONFIGS)
    except ScrClfError as err:
        print(f"learning_curve: error: {one_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(f"{report['points_done']} of {report['points_planned']} points in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
