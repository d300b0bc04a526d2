"""How a training run that stops says so: one line for each failure a user can act on, naming what happened, what is
intact and the command to continue; anything else keeps its traceback (a defect to report).

Imports nothing heavy: train.py reads it when a run has stopped, whatever stopped it.
"""

from __future__ import annotations

import errno
import pickle
import shutil
from pathlib import Path

RESUME = (
    "the checkpoints saved so far are complete: run the same command with --resume_from_checkpoint last to continue"
)
# torch's zip writer reports a full disk as this, without the word "space"
_TORCH_WRITE_FAILED = ("PytorchStreamWriter failed writing", "file write failed", "unexpected pos")


def failure_message(error: BaseException, output_dir: str | None = None) -> tuple[str, int] | None:
    """The line to print and the exit status for a run stopped by `error`, or None for an error without one (its
    traceback is shown). `output_dir`: the run's folder, where the disk and the checkpoints are."""
    where = f"'{output_dir}'" if output_dir else "the output folder"
    if isinstance(error, KeyboardInterrupt):
        return f"interrupted; {RESUME}", 130
    if isinstance(error, ValueError) and type(error).__module__.startswith("modeling_crab."):
        return f"error: {error}", 2  # Crab's own: a bad setting, manifest, checkpoint or cache, named with its fix
    if isinstance(error, pickle.UnpicklingError):  # a weights or state file that would run code when loaded
        from ..modeling_crab import UnsafeWeightsError

        return f"error: {UnsafeWeightsError.from_refusal(error)}", 2
    if isinstance(error, OSError) and error.errno == errno.ENOSPC or _torch_write_failed(error, output_dir):
        return (
            f"error: the disk holding {where} is full; free space there (or pass another --output_dir), then {RESUME}",
            1,
        )
    if isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        what = "is read-only" if error.errno == errno.EROFS else "cannot be written (permission denied)"
        name = error.filename or where
        return f"error: '{name}' {what}; pass an --output_dir you can write, or fix the folder's permissions", 1
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        device = "GPU" if type(error).__name__ == "OutOfMemoryError" else "machine"
        return (
            f"error: the {device} ran out of memory; lower --per_device_train_batch_size (with more "
            "--gradient_accumulation_steps for the same effective batch) or --max_duration_s, or turn on "
            f"--gradient_checkpointing; {RESUME}",
            1,
        )
    return None


def _torch_write_failed(error: BaseException, output_dir: str | None) -> bool:
    """torch.save's failure on a full disk: a RuntimeError naming the zip writer, with the disk nearly full."""
    if not isinstance(error, RuntimeError) or not any(text in str(error) for text in _TORCH_WRITE_FAILED):
        return False
    folder = Path(output_dir or ".")
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free < 64 * 2**20
    except OSError:
        return False
