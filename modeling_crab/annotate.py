"""`crab annotate`: one model over a whole corpus, one row per recording, resumable, on every process of a launch.

    crab annotate recordings/ --model outputs/demo/inference --output scores.parquet --audio-only
    crab annotate corpus/manifest.csv --model user/crab-iemocap --output scores.csv --windows
    torchrun --nnodes 4 --nproc_per_node 8 ... -m modeling_crab.cli annotate ...   # every GPU of every node

The input is a manifest (`manifest.load_manifest`: CSV, JSONL or a saved `datasets` folder; `text` optional), a
folder of audio files (searched recursively, `audio.AUDIO_SUFFIXES`; the relative path is the id) or the name of a
`datasets` dataset with an audio column. A recording without a transcript is transcribed by the pipeline's speech
recognizer; `--audio-only` classifies every recording from its audio alone (models trained with modality dropout).

How a run goes, in each process (rank):
1. `read_inputs` lists the recordings in a stable order (the manifest's rows, the folder's sorted paths); each rank
   takes every `world`-th of them (`shard`), less those already in a complete part (`read_parts`: a resumed run).
2. DataLoader workers read and window each recording through the pipeline (`CrabEmotionPipeline.read_windows`:
   `audio.read_audio`, resampling, the windows of long audio), ahead of the model.
3. The main process gives each recording its transcript (`add_transcripts`), pools the windows of many recordings
   and scores them longest first in batches (`CrabEmotionPipeline.score_recordings`), answering each recording as the
   pipeline does (`postprocess`). Its row holds the id, the audio, the duration, each output head's columns
   (`OutputHead.columns`), the transcript, and an `error` (a recording that cannot be read or scored is a row with
   its error, never a stopped run).
4. `PartWriter` writes the rows every `--flush-every` recordings to `OUT.parts/part-<rank>-<sequence>.jsonl`, each
   file written whole or not at all (`manifest.write_atomically`), so a killed run loses at most the rows since the
   last part, and a run with `--resume` skips the recordings the parts hold (those that failed are tried again).
5. After a barrier, rank 0 merges the parts into OUT in the inputs' order (`merge`), Parquet or CSV by its suffix,
   and removes the parts. A run of N processes writes what one process writes.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

OUTPUT_SUFFIXES = (".parquet", ".csv")
FLUSH_EVERY = 500  # recordings per part file
FLUSH_SECONDS = 300.0  # and at least this often, for slow recordings
POOL_BATCHES = 8  # windows pooled before scoring, in batches: the pool is sorted by length, so batches pad little
PART_GLOB = "part-*.jsonl"
RANK_TIMEOUT = timedelta(hours=12)  # how long a rank waits at a barrier for the others (the slowest shard)


class AnnotateInputError(ValueError):
    """An input, output or setting `crab annotate` cannot run on; the message names it and the fix."""


@dataclass
class Recording:
    """One input recording: its id (unique: the output's key and what a resumed run skips), its audio file and the
    segment of it (seconds), its transcript (`None`: transcribed; `""`: audio only) and, for a manifest row that
    cannot be read, its problem (its row's error)."""

    id: str
    audio: str
    text: str | None
    start: float | None = None
    end: float | None = None
    problem: str | None = None


# ---- the inputs -------------------------------------------------------------------------------------------------


def read_inputs(source: str, audio_only: bool = False, split: str | None = None) -> list[Recording]:
    """The recordings of `source` (a manifest, a saved dataset folder, a folder of audio files or a dataset name), in
    their stable order. `split` keeps one split of a manifest or dataset."""
    from .manifest import is_saved_dataset

    path = Path(source).expanduser()
    if path.is_dir() and not is_saved_dataset(path):
        recordings = _folder_recordings(path, audio_only)
    elif path.exists():
        recordings = _manifest_recordings(path, audio_only, split)
    elif _looks_local(source):
        raise AnnotateInputError(
            f"INPUT '{source}' does not exist; pass a manifest (CSV or JSONL with an audio column), a folder of audio "
            "files, a saved datasets folder or a dataset name"
        )
    else:
        recordings = _manifest_recordings(_load_dataset(source, split), audio_only, split)
    seen: dict[str, int] = {}
    for index, recording in enumerate(recordings):
        if recording.id in seen:
            raise AnnotateInputError(
                f"INPUT '{source}' has the id '{recording.id}' twice (rows {seen[recording.id]} and {index}); ids name "
                "the output's rows and what a resumed run skips: make them unique, or leave the id column out (row "
                "numbers)"
            )
        seen[recording.id] = index
    return recordings


def _looks_local(source: str) -> bool:
    """A path rather than a dataset name on the Hub: absolute, relative (`./`, `~`), a file suffix, or more than
    `owner/name`."""
    from .audio import AUDIO_SUFFIXES  # here: the CLI's parser imports this module for its defaults alone

    return (
        source.startswith((".", "~", "/", os.sep))
        or Path(source).suffix.lower() in (".csv", ".jsonl", ".json", *AUDIO_SUFFIXES)
        or source.count("/") > 1
    )


def _folder_recordings(folder: Path, audio_only: bool) -> list[Recording]:
    from .audio import AUDIO_SUFFIXES, audio_files

    files = audio_files(folder)
    if not files:
        inside = next((p.name for p in sorted(folder.glob("*")) if p.suffix.lower() in (".csv", ".jsonl")), None)
        hint = f"; it holds {inside}: pass {folder / inside}" if inside else ""
        raise AnnotateInputError(
            f"INPUT folder '{folder}' holds no audio files ({', '.join(AUDIO_SUFFIXES)}, in it or its subfolders); "
            f"pass the folder that holds them, or a manifest{hint}"
        )
    text = "" if audio_only else None
    return [Recording(id=p.relative_to(folder).as_posix(), audio=str(p), text=text) for p in files]


def _load_dataset(name: str, split: str | None):
    try:
        import datasets

        return datasets.load_dataset(name, split=split)
    except Exception as error:
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise AnnotateInputError(
            f"INPUT '{name}' is not a file or folder here, and datasets cannot load it as a dataset ({reason}); pass a "
            "manifest, a folder of audio files, a saved datasets folder or a dataset name (with --split)"
        ) from None


def _columns(manifest) -> set[str]:
    """A manifest's columns, without reading its audio (a saved dataset is memory-mapped)."""
    from .manifest import column_names

    if isinstance(manifest, Path) and manifest.is_dir():
        import datasets

        manifest = datasets.load_from_disk(str(manifest))
    names = getattr(manifest, "column_names", None)
    if names is None:
        return column_names(manifest)
    if isinstance(names, dict):  # a DatasetDict: each split's
        return {name for split in names.values() for name in split} | {"split"}
    return set(names)


def _manifest_recordings(manifest, audio_only: bool, split: str | None) -> list[Recording]:
    from .manifest import ManifestError, load_manifest, select_split

    try:
        has_text = "text" in _columns(manifest)
        utterances = load_manifest(manifest, needs_label=False, needs_text=False)
        if split is not None:
            utterances = select_split(utterances, split)
    except ManifestError as error:
        raise AnnotateInputError(str(error).replace("--manifest", "INPUT")) from None
    if split is not None and not utterances:
        raise AnnotateInputError(f"INPUT has no rows of --split '{split}'; pass one of its splits, or leave it out")
    recordings = []
    for u in utterances:
        problems = list(u.problems) + ([] if u.audio else ["no audio file named"])
        text = "" if audio_only else (u.text if has_text and u.text else None)
        recordings.append(
            Recording(u.id, u.audio, text, u.start, u.end, f"{u.where}: {'; '.join(problems)}" if problems else None)
        )
    return recordings


def shard(recordings: Sequence[Recording], rank: int, world: int) -> list[Recording]:
    """Rank `rank`'s share of the inputs: every `world`-th recording from its rank on (the same split of the same
    inputs in every run, whatever was done before)."""
    return list(recordings[rank::world])


# ---- the output and its parts -----------------------------------------------------------------------------------


def parts_folder(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def check_output(output: Path, resume: bool, overwrite: bool) -> None:
    """OUT: Parquet or CSV by its suffix; an existing OUT (or the parts of an unfinished run) only with `--resume`
    (continue it) or `--overwrite` (start again)."""
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise AnnotateInputError(f"--output '{output}' has suffix '{output.suffix}'; name it .parquet or .csv")
    if output.is_dir():
        raise AnnotateInputError(f"--output '{output}' is a folder; pass a file name ending .parquet or .csv")
    if output.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise AnnotateInputError(
                f"--output '{output}' needs pyarrow to write Parquet: pip install pyarrow, or name it .csv"
            ) from None
    if resume and overwrite:
        raise AnnotateInputError("pass --resume (continue) or --overwrite (start again), not both")
    parts = parts_folder(output)
    if (output.exists() or parts.exists()) and not (resume or overwrite):
        found = f"'{output}' exists" if output.exists() else f"'{parts}' holds the parts of an unfinished run"
        raise AnnotateInputError(
            f"--output {found}; pass --resume to continue it (what is done is skipped) or --overwrite to start again"
        )


def read_parts(folder: Path) -> tuple[dict[str, dict], int]:
    """The rows of every complete part in `folder` by id (the row of a later run's part wins: a recording that
    failed and was tried again), and the next free sequence number. A part is complete once it has its name: parts
    are renamed into place whole."""
    rows: dict[str, dict] = {}
    parts = sorted(folder.glob(PART_GLOB)) if folder.is_dir() else []
    numbered = sorted((int(path.stem.rsplit("-", 1)[-1]), path.name, path) for path in parts)
    for _, _, path in numbered:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                rows[row["id"]] = row
    return rows, numbered[-1][0] + 1 if numbered else 0


class PartWriter:
    """One rank's rows, written to `folder/part-<rank>-<sequence>.jsonl` every `every` rows (and every
    `FLUSH_SECONDS`), each part whole or not at all."""

    def __init__(self, folder: Path, rank: int, sequence: int, every: int):
        self.folder, self.rank, self.sequence, self.every = folder, rank, sequence, every
        self.rows: list[dict] = []
        self.last_flush = time.monotonic()

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.every or time.monotonic() - self.last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        from .manifest import write_atomically

        if self.rows:
            lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in self.rows]
            path = self.folder / f"part-{self.rank:05d}-{self.sequence:06d}.jsonl"
            write_atomically(path, lambda handle: handle.writelines(lines))
            self.sequence += 1
            self.rows = []
        self.last_flush = time.monotonic()


def table_columns(rows: Sequence[dict]) -> list[str]:
    """Every row's keys, in first-seen order (an error row lacks no column, but a part may come from another run)."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def write_table(rows: Sequence[dict], output: Path) -> None:
    """The rows as Parquet (pyarrow) or CSV (`windows`, a list, as JSON text), by `output`'s suffix; atomically."""
    from .manifest import write_atomically

    columns = table_columns(rows)
    if output.suffix.lower() == ".csv":

        def write(handle) -> None:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for row in rows:
                values = [row.get(column) for column in columns]
                writer.writerow(["" if v is None else json.dumps(v) if isinstance(v, list) else v for v in values])

        write_atomically(output, write)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({column: [row.get(column) for row in rows] for column in columns})
    write_atomically(output, lambda handle: pq.write_table(table, handle), binary=True)


def read_table(output: Path) -> list[dict]:
    """The rows of an output `write_table` wrote (a finished run's, continued with `--resume`)."""
    if output.suffix.lower() == ".csv":
        with output.open(encoding="utf-8", newline="") as handle:
            return [_parse_csv_row(row) for row in csv.DictReader(handle)]
    import pyarrow.parquet as pq

    return pq.read_table(output).to_pylist()


def _parse_csv_row(row: dict[str, str]) -> dict:
    parsed: dict[str, Any] = {}
    for key, value in row.items():
        if value == "":
            parsed[key] = None
        elif key == "windows":
            parsed[key] = json.loads(value)
        elif key in ("id", "audio", "text", "error", "prediction"):
            parsed[key] = value
        else:
            try:
                parsed[key] = float(value)
            except ValueError:
                parsed[key] = value
    return parsed


def merge(recordings: Sequence[Recording], folder: Path, output: Path) -> list[dict]:
    """Every part's rows in the inputs' order -> OUT; the parts are removed once OUT is whole. A recording without a
    row (a rank that stopped) leaves the parts as they are, for `--resume`."""
    done, _ = read_parts(folder)
    missing = [r.id for r in recordings if r.id not in done]
    if missing:
        raise RuntimeError(
            f"{len(missing)} recording(s) have no row (the first: '{missing[0]}'; a process stopped early?); the parts "
            f"in '{folder}' are kept: run the same command with --resume"
        )
    rows = [done[r.id] for r in recordings]
    write_table(rows, output)
    shutil.rmtree(folder, ignore_errors=True)
    return rows


# ---- the processes ----------------------------------------------------------------------------------------------


@dataclass
class Ranks:
    """This process's place in a launch (torchrun, accelerate launch: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
    `LOCAL_WORLD_SIZE`); one process without them."""

    rank: int = 0
    world: int = 1
    local: int = 0
    local_world: int = 1
    device_type: str = "cpu"  # of the process group: "cuda" (nccl) or another (gloo)

    @classmethod
    def from_environment(cls) -> Ranks:
        env = os.environ
        world = int(env.get("WORLD_SIZE", "1"))
        return cls(
            int(env.get("RANK", "0")), world, int(env.get("LOCAL_RANK", "0")), int(env.get("LOCAL_WORLD_SIZE", world))
        )

    def join(self, device: str) -> None:
        """Join the launch's process group: nccl between GPUs, gloo between CPU processes."""
        import torch
        import torch.distributed as dist

        self.device_type = torch.device(device).type
        if self.world > 1 and not dist.is_initialized():
            if self.device_type == "cuda":
                torch.cuda.set_device(torch.device(device))
            dist.init_process_group("nccl" if self.device_type == "cuda" else "gloo", timeout=RANK_TIMEOUT)

    def barrier(self) -> None:
        if self.world > 1:
            import torch
            import torch.distributed as dist

            if self.device_type == "cuda":
                dist.barrier(device_ids=[torch.cuda.current_device()])
                dist.barrier(device_ids=[self.local])
            else:
                dist.barrier()

    def leave(self) -> None:
        import torch.distributed as dist

        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


@contextlib.contextmanager
def launched(device: str | None):
    """This process in its launch, as `(Ranks, device)`: the device is `device`, else the process's own GPU, else the
    CPU; the process group is joined (and left at the end); CPU processes on one node share its cores."""
    import torch

    ranks = Ranks.from_environment()
    device = device or default_device(ranks)
    ranks.join(device)
    if torch.device(device).type == "cpu" and ranks.local_world > 1:
        torch.set_num_threads(cores_per_rank(ranks))
    try:
        yield ranks, device
    finally:
        ranks.leave()


def default_device(ranks: Ranks) -> str:
    """Each local rank's own GPU, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return f"cuda:{ranks.local % torch.cuda.device_count()}"
    return "cpu"


def cores_per_rank(ranks: Ranks) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, ranks.local_world))


def default_workers(ranks: Ranks, device_type: str) -> int:
    """DataLoader workers per rank: on a GPU, all but one of the rank's cores (up to 8) decode; on the CPU the model
    needs the cores, so half of them."""
    cores = cores_per_rank(ranks)
    return min(8, max(1, cores - 1 if device_type == "cuda" else cores // 2))


# ---- reading and scoring ----------------------------------------------------------------------------------------


class WindowReading:
    """A map-style dataset over recordings: item i -> `(recording, windows or None, error or None)`, the audio read
    and windowed by the pipeline (`read_windows`) in a DataLoader worker."""

    def __init__(self, pipe, recordings: Sequence[Recording], chunk_length_s: float | None):
        self.pipe, self.recordings, self.chunk_length_s = pipe, recordings, chunk_length_s

    def __len__(self) -> int:
        return len(self.recordings)

    def __getitem__(self, index: int):
        from .audio import read_audio

        recording = self.recordings[index]
        if recording.problem:
            return recording, None, recording.problem
        name = f"audio file '{recording.audio}'"
        try:
            source: Any = recording.audio
            if recording.start is not None or recording.end is not None:  # a segment: only its frames are read
                rate = self.pipe.processor.sampling_rate
                waveform, rate = read_audio(recording.audio, name, rate, recording.start, recording.end)
                source = {"raw": waveform, "sampling_rate": rate}
            return recording, self.pipe.read_windows(source, name, chunk_length_s=self.chunk_length_s), None
        except Exception as error:  # the row's error; the run goes on
            return recording, None, one_line(error)


def _as_is(item):
    return item


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def duration_of(windows: dict, sampling_rate: int) -> float:
    return sum(len(w) for w in windows["waveforms"]) / sampling_rate


def make_row(recording: Recording, heads, with_windows: bool, duration=None, text=None, output=None, error=None):
    """One recording's output row: id, audio, duration (s), each head's columns (`OutputHead.columns`), the
    transcript, the error (None) and, `with_windows`, each window's span, transcript and columns."""
    from .heads import answer_parts

    parts = answer_parts(output["aggregate"]) if output is not None else {}
    row: dict[str, Any] = {"id": recording.id, "audio": recording.audio, "duration": duration}
    for head in heads:
        row.update(head.columns(parts.get(head.answer_key)))
    row.update(text=text, error=error)
    if with_windows:
        row["windows"] = (
            [
                {
                    "start": w["start"],
                    "end": w["end"],
                    "text": w["text"],
                    **{k: v for head in heads for k, v in head.columns(w[head.window_key]).items()},
                }
                for w in output["windows"]
            ]
            if output is not None
            else None
        )
    return row


def with_window_scoring(pipe):
    """The pipeline, or this package's pipeline around its model and processor where it is an export's code from
    before `read_windows` and `score_recordings` (a checkpoint exported earlier, or a Hub repo's)."""
    if all(hasattr(pipe, method) for method in ("read_windows", "add_transcripts", "score_recordings")):
        return pipe
    from .pipeline_crab import CrabEmotionPipeline

    return CrabEmotionPipeline(model=pipe.model, processor=pipe.processor, device=pipe.device)


def score_pool(pipe, pool: list, batch_size: int, forward: dict, heads, with_windows: bool) -> list[dict]:
    """Recordings with their windows and transcripts -> their rows. Their windows are scored together
    (`score_recordings`: longest first, in batches); a batch that fails is scored again recording by recording, so
    that only the recording at fault becomes an error row."""
    rate = pipe.processor.sampling_rate
    try:
        outputs = pipe.score_recordings(
            [prepared for _, prepared in pool], batch_size, forward, {"return_windows": True}
        )
    except Exception as error:
        if len(pool) > 1:
            return [row for item in pool for row in score_pool(pipe, [item], batch_size, forward, heads, with_windows)]
        recording, prepared = pool[0]
        duration = duration_of(prepared, rate)
        return [make_row(recording, heads, with_windows, duration, prepared["text"], error=one_line(error))]
    return [
        make_row(recording, heads, with_windows, duration_of(prepared, rate), prepared["text"], output)
        for (recording, prepared), output in zip(pool, outputs)
    ]


@dataclass
class Summary:
    recordings: int
    done: int
    failed: int
    skipped: int
    audio_s: float
    seconds: float

    def line(self, output: Path) -> str:
        rate = f", {self.audio_s / self.seconds:.1f} audio-s/s" if self.seconds > 0 and self.audio_s else ""
        return (
            f"crab annotate: {self.recordings} recordings in {output}: {self.done} done, {self.failed} failed (their "
            f"error column says why), {self.skipped} skipped (done before); {self.audio_s / 3600:.3f} audio-hours in "
            f"{self.seconds:.1f} s{rate}"
        )


def annotate(
    pipe,
    recordings: Sequence[Recording],
    output: Path,
    ranks: Ranks,
    *,
    overwrite: bool = False,
    batch_size: int | None = None,
    num_workers: int | None = None,
    flush_every: int = FLUSH_EVERY,
    chunk_length_s: float | None = None,
    precision: str = "fp32",
    backend: str = "pytorch",
    asr_model=None,
    with_windows: bool = False,
    tf32: bool = True,
    pad_to_buckets=None,
) -> Summary | None:
    """Annotate this rank's share of `recordings` into parts beside `output`, then (rank 0, after every rank is
    done) merge them into `output`. Returns rank 0's summary of the whole run; None on the other ranks.
    `batch_size`: windows per forward pass (default: 64 on a GPU, 16 on the CPU); `num_workers`: DataLoader workers
    reading audio (default: `default_workers`); `tf32`: on a GPU, fp32 matmuls in TF32; `pad_to_buckets`: each batch
    of windows padded to a shape bucket (the pipeline's `pad_to_buckets`: True for the model's own)."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from .heads import heads_of

    started = time.monotonic()
    pipe = with_window_scoring(pipe)
    check_buckets(pipe, pad_to_buckets)
    batch_size = batch_size or (64 if pipe.device.type == "cuda" else 16)
    num_workers = default_workers(ranks, pipe.device.type) if num_workers is None else num_workers
    folder = parts_folder(output)
    if pipe.device.type == "cuda" and tf32:
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores (cuDNN's convolutions already)
    if ranks.rank == 0:  # the parts folder is made ready, and read, before any rank writes to it
        if overwrite:
            shutil.rmtree(folder, ignore_errors=True)
        elif output.exists() and not any(folder.glob(PART_GLOB)):  # a finished run, continued: its rows count as done
            write_parts_of(read_table(output), folder)
        for stale in folder.glob(".part-*.tmp"):  # a part being written when a run was killed
            stale.unlink(missing_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
        done_before, sequence = read_parts(folder)
    ranks.barrier()
    if ranks.rank != 0:
        done_before, sequence = read_parts(folder)
    done_before = {uid: row for uid, row in done_before.items() if row.get("error") is None}  # failed: tried again
    todo = [r for r in shard(recordings, ranks.rank, ranks.world) if r.id not in done_before]

    heads = heads_of(pipe.model.config)
    untranscribed = [r for r in todo if r.text is None and not r.problem]
    if untranscribed:
        try:
            pipe._asr(asr_model)  # the speech recognizer loads now, or the run stops before any audio is read
        except Exception as error:
            reason = one_line(error.__cause__ or error)[:300]
            raise AnnotateInputError(
                f"{len(untranscribed)} recording(s) have no transcript (the first: '{untranscribed[0].id}'), and the "
                f"speech recognizer that would make them cannot load ({reason}); give the manifest a text column, "
                "pass --asr-model a local model, or --audio-only for a model trained with modality dropout"
            ) from None
    if any(r.text == "" for r in todo) and not getattr(pipe.model.config, "modality_dropout", 0.0):
        warnings.warn(
            "classifying from audio alone (--audio-only or empty transcripts), but this model was trained without "
            "modality dropout; its scores lean on the transcript it does not get",
            stacklevel=2,
        )
    forward = {"precision": precision, "backend": backend}
    if pad_to_buckets is not None:  # the pipeline's parameter: pipelines exported before it existed take none
        forward["pad_to_buckets"] = pad_to_buckets
    writer = PartWriter(folder, ranks.rank, sequence, flush_every)
    reading = WindowReading(pipe, todo, chunk_length_s)
    pool_windows = batch_size * POOL_BATCHES
    # workers share the pipeline by fork (no copy of the model); they read a pool's worth of recordings ahead, so
    # that the next pool is read while this one is scored
    workers = num_workers if "fork" in torch.multiprocessing.get_all_start_methods() else 0
    loader = DataLoader(
        reading,
        batch_size=None,
        collate_fn=_as_is,
        num_workers=workers,
        prefetch_factor=max(2, -(-pool_windows // workers)) if workers else None,
        multiprocessing_context="fork" if workers else None,
    )
    share = f" (rank 0 of {ranks.world})" if ranks.world > 1 else ""
    bar = tqdm(
        total=len(todo),
        desc=f"annotating{share}",
        unit="rec",
        file=sys.stderr,
        disable=True if ranks.rank != 0 else None,  # rank 0, on a terminal (as every bar here)
        mininterval=1.0,
        dynamic_ncols=True,
    )
    audio_s, pool, pooled = 0.0, [], 0

    def emit(rows: list[dict]) -> None:
        nonlocal audio_s
        for row in rows:
            writer.add(row)
            audio_s += row["duration"] or 0.0
        bar.update(len(rows))
        elapsed = max(time.monotonic() - started, 1e-9)
        bar.set_postfix_str(f"{audio_s / 3600:.2f} audio-h, {audio_s / elapsed:.1f} audio-s/s", refresh=False)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*an empty transcript asks for audio-only prediction")
        for recording, windows, error in loader:
            if error is not None:
                emit([make_row(recording, heads, with_windows, None, recording.text, error=error)])
                continue
            name = f"audio file '{recording.audio}'"
            try:
                prepared = pipe.add_transcripts(windows, recording.text, name, asr_model)
            except Exception as failure:
                duration = duration_of(windows, pipe.processor.sampling_rate)
                emit([make_row(recording, heads, with_windows, duration, None, error=one_line(failure))])
                continue
            pool.append((recording, prepared))
            pooled += len(prepared["waveforms"])
            if pooled >= pool_windows:
                emit(score_pool(pipe, pool, batch_size, forward, heads, with_windows))
                pool, pooled = [], 0
        if pool:
            emit(score_pool(pipe, pool, batch_size, forward, heads, with_windows))
    writer.flush()
    bar.close()

    ranks.barrier()
    summary = None
    if ranks.rank == 0:
        rows = merge(recordings, folder, output)
        fresh = [row for row in rows if row["id"] not in done_before]
        failed = sum(row.get("error") is not None for row in fresh)
        summary = Summary(
            recordings=len(rows),
            done=len(fresh) - failed,
            failed=failed,
            skipped=len(rows) - len(fresh),
            audio_s=sum(row["duration"] or 0.0 for row in fresh),
            seconds=time.monotonic() - started,
        )
    ranks.barrier()
    return summary


def check_buckets(pipe, pad_to_buckets) -> None:
    """`--pad-to-buckets` (`pad_to_buckets=True`) needs the model's saved shape buckets and a head that masks padding;
    else one `AnnotateInputError` before any audio is read, not a failed row for every recording."""
    if pad_to_buckets is None or pad_to_buckets is False:
        return
    if pad_to_buckets is True and getattr(pipe.processor, "shape_buckets", None) is None:
        raise AnnotateInputError(
            "--pad-to-buckets pads to the shape buckets saved with the model, and it has none (it was trained "
            "without train.py --shape_buckets); drop --pad-to-buckets"
        )
    if not getattr(pipe.model.config, "mask_padding", True):
        raise AnnotateInputError(
            "--pad-to-buckets pads windows, and this model's head does not mask padding (config.mask_padding=False, "
            "the release recipe), so padding would change its scores; drop --pad-to-buckets"
        )


def write_parts_of(rows: list[dict], folder: Path) -> None:
    """A finished output's rows as the first part of a continued run."""
    if rows:
        writer = PartWriter(folder, 0, 0, len(rows))
        for row in rows:
            writer.add(row)
        writer.flush()
