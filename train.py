"""Train Crab: WavLM + RoBERTa + the Crab head, with class-weighted CE and Multi Layer Contrastive Supervision.

    python train.py                                       # built-in demo: synthetic corpus, tiny model, CPU, minutes
    python train.py --manifest data/iemocap/manifest.csv --output_dir outputs/iemocap
    python train.py configs/meld.json --num_train_epochs 1   # a JSON/YAML config file, then CLI overrides
    python train.py --manifest m.csv --recipe release     # the authors' released training loop, setting by setting
    accelerate launch train.py configs/msp_podcast.json   # DDP (see docs/training.md for FSDP)

Every argument, with the value this run would use: `python train.py [config file] [flags] --help`. The arguments,
their presets and their checks are `modeling_crab/training/arguments.py`; the run's steps are
`modeling_crab/training/run.py`. At the end `output_dir` holds `eval_results.json` (with the recipe and padding the
model was trained with), `predictions_<split>.csv`, `confusion_matrix_*.png`, `training_curves.png` and the
inference export in `inference/`.
"""

from __future__ import annotations

import sys

from modeling_crab.training.arguments import parse_arguments


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Parse and check the arguments (`python train.py --help`), then train, evaluate and export; the metrics."""
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    from modeling_crab.training.run import train  # the training stack: once the arguments are known to be good

    return train(arguments)


if __name__ == "__main__":
    try:
        main()
    except ValueError as error:  # Crab's own (a bad setting, manifest, checkpoint, ...) name the input and the fix
        if not type(error).__module__.startswith("modeling_crab."):
            raise
        print(f"train.py: error: {error}", file=sys.stderr)
        sys.exit(2)
