"""Training checkpoints: written whole or not at all, found again after a kill, and resumed only into the same run.

Writing: `CrabTrainer` writes each `checkpoint-N` in `output_dir/.saving/` and renames it into place once every file
is on disk, so a kill never leaves a complete-looking broken `checkpoint-N`; rotation renames a checkpoint away before
deleting it, so a kill never leaves a half-deleted one either. The best checkpoint (and its metrics, in its
`trainer_state.json`) is never rotated away.

Resuming: `find_checkpoint` picks the newest *complete* checkpoint for `--resume_from_checkpoint last`, warning about
any incomplete one it skips (written by a killed run of an older version, or cut short on disk).
`check_resume_matches` then refuses a checkpoint that means something else than the run about to resume it (other
labels or label order, another head, other loss terms or trainable parameters, other augmentation), naming both
values, before anything is trained.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import struct
import sys
import time
import zipfile
from pathlib import Path

import torch

from .augment import SPEC_AUGMENT_KEYS

logger = logging.getLogger(__name__)

# torch.save's files in a checkpoint: zip archives, whose directory is written last
TORCH_STATE_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "scaler.pt")
STAGING_FOLDER = ".saving"  # where a checkpoint is written before it is renamed into place
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# config entries that change what a checkpoint's weights mean; resuming under other values is refused
MEANING_KEYS = (
    "id2label",
    "attribute_names",
    "mask_padding",
    "unimodal_tap",
    "use_csl_legs",
    "mlcs_taps",
    "mlcs_loss",
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed (incomplete, or written by a run that means something else)."""


# ---------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------


def publish_checkpoint(staged: Path, final: Path) -> None:
    """Move a fully written checkpoint folder into place; an older folder of the same name is replaced."""
    _flush_folder(staged)
    if final.exists():
        old = final.with_name(f".replaced-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(staged, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, final)


def _flush_folder(folder: Path) -> None:
    """fsync every file, so the rename that follows cannot reach the disk before the data does."""
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def rotate_checkpoints(output_dir: Path, save_total_limit: int | None, best_checkpoint: str | None) -> None:
    """Delete the oldest checkpoints beyond `save_total_limit`, never the newest nor the best; each is renamed
    aside before it is deleted."""
    if not save_total_limit or save_total_limit <= 0:
        return
    checkpoints = sorted(_checkpoint_folders(output_dir), key=lambda path: _step(path))
    protected = {checkpoints[-1].resolve()} if checkpoints else set()
    if best_checkpoint:
        protected.add(Path(best_checkpoint).resolve())
    excess = len(checkpoints) - max(save_total_limit, len(protected))
    for checkpoint in checkpoints:
        if excess <= 0:
            break
        if checkpoint.resolve() in protected:
            continue
        _delete(checkpoint)
        excess -= 1


def clear_checkpoints(output_dir: Path) -> None:
    """Delete every checkpoint in `output_dir`: for a run that always starts over there (the frozen-encoder
    baseline), so that an earlier run's checkpoints do not enter its rotation. Each is renamed aside first."""
    for checkpoint in _checkpoint_folders(output_dir):
        _delete(checkpoint)


def _delete(checkpoint: Path) -> None:
    """Rename aside, then delete: a kill in between leaves no half-deleted folder under a checkpoint's name."""
    doomed = checkpoint.with_name(f".deleting-{checkpoint.name}")
    os.replace(checkpoint, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# Finding
# ---------------------------------------------------------------------------------------------------------------


def _checkpoint_folders(output_dir: Path) -> list[Path]:
    if not output_dir.is_dir():
        return []
    return [path for path in output_dir.iterdir() if path.is_dir() and _CHECKPOINT.match(path.name)]


def _step(path: Path) -> int:
    return int(_CHECKPOINT.match(path.name).group(1))


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """Why `folder` is not a complete training checkpoint, or None when it is one."""
    folder = Path(folder)
    if not folder.is_dir():
        return "it is not a folder"
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "it has no trainer_state.json (its writing was interrupted)"
    try:
        json.loads(state.read_text())
    except (OSError, ValueError) as error:
        return f"its trainer_state.json is unreadable ({error})"
    if not (folder / "config.json").is_file():
        return "it has no config.json"
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").is_file():
        shards = ["model.safetensors"]
    else:
        return "it has no model.safetensors"
    for shard in shards:
        problem = safetensors_problem(folder / shard)
        if problem:
            return problem
    for name in TORCH_STATE_FILES:  # the optimizer's, scheduler's and RNG states, where the checkpoint has them
        if (folder / name).exists() and not zipfile.is_zipfile(folder / name):
            return f"its {name} is cut short or not a torch file (no zip directory at its end)"
    return None


def safetensors_problem(path: Path) -> str | None:
    """A safetensors file is complete when its header parses and its size is what the header says."""
    if not path.is_file():
        return f"{path.name} is missing"
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            (header_size,) = struct.unpack("<Q", handle.read(8))
            if header_size > size:
                raise ValueError("header longer than the file")
            header = json.loads(handle.read(header_size))
    except (OSError, ValueError, struct.error) as error:
        return f"{path.name} is unreadable ({error})"
    try:
        end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    except (AttributeError, KeyError, TypeError, IndexError):  # JSON, but not a table of tensors
        return f"{path.name} is unreadable (its header is not a safetensors header)"
    if size < 8 + header_size + end:
        return f"{path.name} is truncated ({size} of {8 + header_size + end} bytes)"
    return None


def find_checkpoint(output_dir: str | os.PathLike) -> str:
    """The newest complete `checkpoint-N` in `output_dir`; incomplete newer ones are skipped with a warning."""
    output_dir = Path(output_dir)
    candidates = sorted(_checkpoint_folders(output_dir), key=_step, reverse=True)
    for folder in candidates:
        problem = checkpoint_problem(folder)
        if problem is None:
            return str(folder)
        logger.warning(f"skipping the incomplete checkpoint '{folder}': {problem}; resuming from an older one")
    if candidates:
        raise CheckpointError(
            f"--resume_from_checkpoint: no complete checkpoint in '{output_dir}' (all {len(candidates)} are "
            "incomplete); start without --resume_from_checkpoint"
        )
    raise CheckpointError(f"--resume_from_checkpoint: no checkpoint-* folder in '{output_dir}' to resume from")


def _resumes(value: str | None) -> bool:
    """Whether a `--resume_from_checkpoint` value asks to resume (anything but unset or "false")."""
    return value is not None and value.lower() != "false"


def check_output_dir(output_dir: str | os.PathLike, resume_from_checkpoint: str | None) -> None:
    """Before a run reads anything: `output_dir` is a folder (or not there yet), and a run that does not resume does
    not write into a folder holding another run's complete checkpoints (checkpoint rotation would then delete one
    run's checkpoints and keep the other's, and the earlier results would be overwritten)."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise CheckpointError(f"--output_dir '{output_dir}' is a file; pass a folder (it is created when missing)")
    if _resumes(resume_from_checkpoint):
        return
    complete = [
        path.name for path in sorted(_checkpoint_folders(output_dir), key=_step) if not checkpoint_problem(path)
    ]
    if complete:
        raise CheckpointError(
            f"--output_dir '{output_dir}' holds the checkpoints of an earlier run ({', '.join(complete)}); continue "
            "it with --resume_from_checkpoint last, or pass another --output_dir (or delete that folder to start "
            "over there)"
        )


LOCK_FILE = ".crab_run.lock"  # in output_dir while a run writes there: its process, host, start and command


class RunLock:
    """Held by a run for its life in its `output_dir`: a second run into the same folder stops at once, naming the
    first, instead of both writing checkpoints and exports over each other. A lock left by a process that is no longer
    alive on this host (a killed run) is taken over with one warning; one from another host is left for the user to
    judge. Only the main process of a data-parallel run takes it."""

    def __init__(self, output_dir: str | os.PathLike):
        self.path = Path(output_dir) / LOCK_FILE
        self.held = False

    def __enter__(self) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            return self  # not a folder: `check_output_dir` says so
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        }
        for _ in range(2):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._take_over_stale():
                    raise
                continue
            with os.fdopen(descriptor, "w") as handle:
                json.dump(record, handle)
            self.held = True
            return self
        raise CheckpointError(f"--output_dir '{self.path.parent}': its run lock {self.path} could not be taken")

    def _take_over_stale(self) -> bool:
        """Remove the lock of a run that is no longer alive; raise naming the run that is."""
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):  # cut short while being written, or removed meanwhile
            holder = {}
        pid, host = holder.get("pid"), holder.get("host")
        if host == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
            logger.warning(
                f"{self.path}: the run that held it (pid {pid}, {holder.get('command')}) ended without "
                "releasing it; taking it over"
            )
            self.path.unlink(missing_ok=True)
            return True
        if not holder and not self.path.exists():
            return True
        who = f"pid {pid} on {host}, started {holder.get('started')}: {holder.get('command')}" if holder else "unknown"
        raise CheckpointError(
            f"--output_dir '{self.path.parent}' is in use by another run ({who}); wait for it to end, or pass another "
            f"--output_dir. If no run is writing there, delete {self.path}"
        )

    def __exit__(self, *exc_info) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _alive(pid: int) -> bool:
    """Whether a process of this host has that id."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def relocate_best_checkpoint(checkpoint: str | os.PathLike, output_dir: str | os.PathLike) -> None:
    """A run folder copied or moved elsewhere and resumed there: its `trainer_state.json` names the best checkpoint by
    its old absolute path, so the copy would load its "best" from the original folder and the moved one forget it.
    Re-point it to the checkpoint of the same name in `output_dir` (the file rewritten atomically)."""
    state_file = Path(checkpoint) / "trainer_state.json"
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return  # checkpoint_problem reports a checkpoint without a readable state
    best = state.get("best_model_checkpoint")
    if not best:
        return
    here = Path(output_dir) / Path(best).name
    if Path(best).resolve() == here.resolve() or not here.is_dir():
        return
    state["best_model_checkpoint"] = str(here)
    staged = state_file.with_name(f".{state_file.name}.tmp")
    staged.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(staged, state_file)
    logger.info(f"{state_file}: the best checkpoint is {here} (the run folder was copied or moved from {best})")


def resolve_resume_checkpoint(value: str | None, output_dir: str | os.PathLike) -> str | None:
    """`--resume_from_checkpoint`: `last`/`true` -> the newest complete checkpoint of `output_dir`; a path -> that
    path, if it is a complete checkpoint."""
    if not _resumes(value):
        return None
    if value.lower() in ("true", "last"):
        return find_checkpoint(output_dir)
    problem = checkpoint_problem(value)
    if problem:
        raise CheckpointError(
            f"--resume_from_checkpoint '{value}' cannot be resumed: {problem}; pass a complete checkpoint-N folder, "
            "or 'last' for the newest complete one"
        )
    return value


# ---------------------------------------------------------------------------------------------------------------
# Resuming the same run
# ---------------------------------------------------------------------------------------------------------------


def check_resume_config(checkpoint: str | os.PathLike, config, normalization: str | None = None) -> None:
    """Refuse to resume `checkpoint` into a model built with `config` when they mean different things: other labels
    (or their order, or their number) or attributes, another head, other MLCS terms, another waveform normalisation, or other
    training audio (`config.augmentation`, the speech encoder's SpecAugment settings): the resumed run would not be
    the interrupted one."""
    saved = json.loads((Path(checkpoint) / "config.json").read_text())
    differences = []
    for key in MEANING_KEYS:
        ours, theirs = _comparable(key, getattr(config, key, None)), _comparable(key, saved.get(key))
        if theirs is not None and ours != theirs:
            differences.append(f"{_describe(key)}: the checkpoint has {theirs}, this run has {ours}")
    # the training audio: a resumed run sees the uninterrupted run's augmented clips and masks, or is another run
    if saved.get("augmentation") != getattr(config, "augmentation", None):
        differences.append(
            f"waveform augmentation (--speed_factors, --gain_db, --noise_*, --reverb_*): the checkpoint has "
            f"{saved.get('augmentation')}, this run has {getattr(config, 'augmentation', None)}"
        )
    saved_audio = saved.get("audio_config") or {}
    for key in SPEC_AUGMENT_KEYS:
        ours, theirs = getattr(config.audio_config, key, None), saved_audio.get(key)
        if theirs is not None and ours != theirs:
            differences.append(f"SpecAugment --{key}: the checkpoint has {theirs}, this run has {ours}")
    processor_file = Path(checkpoint) / "processor_config.json"
    if normalization is not None and processor_file.is_file():
        saved = json.loads(
            processor_file.read_text()
        )  # the feature extractor's settings nest in it (older: top level)
        saved_normalization = (saved.get("feature_extractor") or {}).get("normalization", saved.get("normalization"))
        if saved_normalization is not None and saved_normalization != normalization:
            differences.append(
                f"--normalization: the checkpoint has {saved_normalization!r}, this run has {normalization!r}"
            )
    if differences:
        raise CheckpointError(
            f"--resume_from_checkpoint '{checkpoint}' was trained for something else:\n  "
            + "\n  ".join(differences)
            + "\nresume with the checkpoint's settings, or start a new run (another --output_dir, no "
            "--resume_from_checkpoint; --model_name_or_path to start from its weights)"
        )


def _comparable(key: str, value):
    if value is None:
        return None
    if key == "id2label":  # JSON keys are strings
        return [value[k] for k in sorted(value, key=int)]
    return list(value) if isinstance(value, (list, tuple)) else value


def _describe(key: str) -> str:
    return {
        "id2label": "labels (in class-id order)",
        "attribute_names": "attributes (--attributes)",
        "mask_padding": "--mask_padding",
        "unimodal_tap": "--unimodal_tap",
        "use_csl_legs": "CSL legs (--mlcs_weight > 0)",
        "mlcs_taps": "--mlcs_taps",
        "mlcs_loss": "--mlcs_loss",
    }[key]


def check_resume_weights_and_optimizer(checkpoint: str | os.PathLike, trainer) -> None:
    """Refuse a checkpoint whose weights do not fit the trainer's model (names, shapes) or whose optimiser state was
    built for other parameter groups (other trainable parameters: a frozen or unfrozen encoder, CSL legs added or
    removed). Call before `trainer.train`."""
    from safetensors import safe_open

    folder = Path(checkpoint)
    index = folder / "model.safetensors.index.json"
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else None
    saved_shapes = {}
    for shard in shards or ["model.safetensors"]:
        with safe_open(str(folder / shard), framework="pt") as handle:
            for name in handle.keys():
                saved_shapes[name] = tuple(handle.get_slice(name).get_shape())
    model = trainer.model
    ours = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    differences = []
    for name in sorted(set(saved_shapes) | set(ours)):
        if name not in ours:
            differences.append(f"weight {name}: in the checkpoint, not in this run's model")
        elif name not in saved_shapes:
            differences.append(f"weight {name}: in this run's model, not in the checkpoint")
        elif saved_shapes[name] != ours[name]:
            differences.append(f"weight {name}: the checkpoint has shape {saved_shapes[name]}, this run {ours[name]}")
    optimizer_file = folder / "optimizer.pt"
    if optimizer_file.is_file():
        saved_groups = torch.load(optimizer_file, map_location="cpu", weights_only=True, mmap=True)["param_groups"]
        theirs = [
            (group.get("group_name", f"group {i}"), len(group["params"])) for i, group in enumerate(saved_groups)
        ]
        had_optimizer = trainer.optimizer is not None
        groups = trainer.create_optimizer().param_groups  # state is allocated at the first step: cheap
        if not had_optimizer:
            trainer.optimizer = None  # let `train` build it where it builds it (after wrapping the model)
        ours_groups = [(group.get("group_name", f"group {i}"), len(group["params"])) for i, group in enumerate(groups)]
        if theirs != ours_groups:
            differences.append(
                f"trainable parameters (optimiser groups: tensors): the checkpoint has {_groups(theirs)}, this run "
                f"has {_groups(ours_groups)} (--freeze_feature_encoder, --encoder_cache and --mlcs_weight change them)"
            )
    if differences:
        shown = differences[:8] + ([f"... and {len(differences) - 8} more"] if len(differences) > 8 else [])
        raise CheckpointError(
            f"--resume_from_checkpoint '{checkpoint}' was trained for something else:\n  "
            + "\n  ".join(shown)
            + "\nresume with the checkpoint's settings, or start a new run (another --output_dir, no "
            "--resume_from_checkpoint; --model_name_or_path to start from its weights)"
        )


def _groups(groups: list[tuple[str, int]]) -> str:
    return ", ".join(f"{name}: {count}" for name, count in groups)


__all__ = [
    "CheckpointError",
    "STAGING_FOLDER",
    "checkpoint_problem",
    "safetensors_problem",
    "find_checkpoint",
    "resolve_resume_checkpoint",
    "check_resume_config",
    "check_resume_weights_and_optimizer",
    "publish_checkpoint",
    "rotate_checkpoints",
]
