"""Export a training run as a model folder: ``python scripts/export.py run_dir=DIR name=NAME``.

Examples:
    python scripts/export.py run_dir=outputs/train/2026-01-01_12-00-00_000000 name=scr-minilm
    python scripts/export.py run_dir=/tmp/run name=tiny wheel=true out_dir=/tmp/models
"""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from scrclf.errors import EXIT_USER_ERROR, ScrClfError, one_line
from scrclf.export.build import check_name, export_model
from scrclf.settings import ExportSettings


@hydra.main(config_path="../configs", config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> str:
    try:
        name = check_name(str(cfg.name))
        settings = ExportSettings.from_config(cfg)
        dest = export_model(
            Path(str(cfg.run_dir)),
            Path(str(cfg.out_dir)) / name,
            wheel=settings.wheel,
            parity_split=settings.parity_split,
            opset=settings.onnx.opset,
            max_logit_diff=settings.onnx.max_logit_diff,
            license=settings.license,
            wheel_version=settings.wheel_version,
            quantization_options=settings.quantization,
        )
    except ScrClfError as err:  # a problem the user can fix; anything else is a bug
        print(f"export: error: {one_line(err)}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    print(f"exported to {dest}", flush=True)
    return str(dest)


if __name__ == "__main__":
    os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))
    main()
