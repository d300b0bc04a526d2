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
from modeling_crab.training.failures import failure_message


def main(argv: list[str] | None = None) -> int:
    """Parse and check the arguments (`python train.py --help`), then train, evaluate and export. A run stopped by
    what a user can act on (a bad setting or input, Ctrl-C, a full disk, no memory) ends with one line saying what
    is intact and how to continue (`failures.py`); anything else keeps its traceback."""
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    from modeling_crab.training.run import train  # the training stack: once the arguments are known to be good

    try:
        train(arguments)
    except (Exception, KeyboardInterrupt) as error:
        stopped = failure_message(error, arguments.training.output_dir)
        if stopped is None:
            raise
        print(f"train.py: {stopped[0]}", file=sys.stderr)
        return stopped[1]
    return 0


if __name__ == "__main__":
    sys.exit(main())
