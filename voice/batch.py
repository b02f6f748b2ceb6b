"""Batch transcription of recorded calls: files, folders or manifests in, resumable JSONL out, locally or on Ray."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from voice.asr import AsrOptions, Transcriber, split_prompt_suffix
from voice.data.manifest import DataError, parse_record
from voice.device import ct2_compute_type, ct2_device
from voice.errors import ConfigError, VoiceError
from voice.files import write_atomic
from voice.models import ModelStore
from voice.vad import VadOptions

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")  # what a folder is searched for (libsndfile reads them)
MANIFEST_SUFFIXES = (".jsonl", ".json")
DONE, FAILED = "file_done", "file_failed"  # the per-file markers that make a file finished


@dataclass(frozen=True)
class BatchOptions:
    """How a batch job runs; the `voice batch transcribe` flags take their defaults from here."""

    workers: int = 0  # model copies at once; 0: CPU cores // threads (Ray: the cluster's CPUs)
    threads: int = 1  # CPU threads per model (= num_cpus per Ray actor)
    ray: str | None = None  # None: a local process pool; "auto" or a Ray address: Ray Data
    batch_size: int = 1  # files per Ray Data batch (each actor call)
    retry_failed: bool = False  # decode files recorded as file_failed again
    progress: bool = True  # a progress bar on stderr (when it is a terminal)

    def validate(self) -> BatchOptions:
        if self.workers < 0 or self.threads < 1 or self.batch_size < 1:
            raise ConfigError("--workers must be >= 0, --threads and --batch-size >= 1")
        return self


@dataclass(frozen=True)
class InputFile:
    """One recording to transcribe: its absolute path and the call id its events carry."""

    path: str
    call_id: str


@dataclass(frozen=True)
class ModelSpec:
    """What a worker needs to load the model itself; picklable, so it reaches processes and actors."""

    model: str
    options: AsrOptions = AsrOptions()
    vad: VadOptions = VadOptions()
    store: ModelStore = ModelStore()

    @property
    def threads(self) -> int:
        return self.options.cpu_threads or os.cpu_count() or 1

    def load(self) -> Transcriber:
        return Transcriber.load(self.model, self.options, self.store)

    def check(self) -> None:
        """Raise ModelError now if the model is not installed, or ConfigError if the device or
        compute type cannot be had here, rather than in every worker."""
        device = ct2_device(self.options.device)
        ct2_compute_type(device, self.options.compute_type)
        self.store.resolve(split_prompt_suffix(self.model)[0])


@dataclass(frozen=True)
class FileResult:
    """One input file's outcome: its transcript events, or why it could not be read."""

    file: str
    call_id: str
    events: tuple[dict[str, Any], ...] = ()
    seconds: float = 0.0  # audio duration
    model: str = ""  # the transcriber's name: which model wrote these lines
    error: str | None = None
    device: str = ""  # where it ran ("cpu" or "cuda") and with which CTranslate2 compute type
    compute_type: str = ""

    def lines(self) -> list[dict[str, Any]]:
        """The output lines: each transcript event with the file, then the file's marker."""
        if self.error is not None:
            return [
                {"type": FAILED, "file": self.file, "call_id": self.call_id, "error": self.error}
            ]
        done = {"type": DONE, "file": self.file, "call_id": self.call_id,
                "utterances": len(self.events), "seconds": self.seconds,
                "model": self.model, "device": self.device,
                "compute_type": self.compute_type}  # fmt: skip
        return [*({**event, "file": self.file} for event in self.events), done]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileResult:
        return cls(**{**data, "events": tuple(data.get("events", ()))})


# --- inputs -------------------------------------------------------------------------------------


def discover_inputs(paths: Sequence[str | Path]) -> list[InputFile]:
    """Audio files named directly, found under folders (recursively, sorted) or listed in
    manifests (each distinct audio file once, the whole file, with its first line's call_id).

    A path that does not exist is an error before anything runs: a typo should not cost an hour."""
    found: dict[str, InputFile] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            items = [
                _input(p) for p in sorted(path.rglob("*")) if p.suffix.lower() in AUDIO_SUFFIXES
            ]
        elif path.suffix.lower() in MANIFEST_SUFFIXES and path.is_file():
            items = manifest_inputs(path)
        elif path.is_file():
            items = [_input(path)]
        else:
            raise ConfigError(f"{path}: no such file or folder")
        for item in items:
            found.setdefault(item.path, item)
    return list(found.values())


def manifest_inputs(path: Path) -> list[InputFile]:
    """The audio files a manifest lists. Lines need no reference `text` here (an archive to
    transcribe has none), so a missing one is filled in before the manifest's own checks."""
    manifest_dir = path.resolve().parent
    items: list[InputFile] = []
    problems = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read manifest ({exc})") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: bad JSON: {exc.msg}") from exc
        if isinstance(record, dict):
            record = {**record, "text": "-"}  # the reference text plays no part here
        entry, found = parse_record(record, manifest_dir, str(path), number)
        problems.extend(found)
        if entry is not None:
            items.append(InputFile(str(entry.audio_path.resolve()), entry.call_id))
    if problems:
        listing = "\n  ".join(str(p) for p in problems[:20])
        raise DataError(f"{path}: {len(problems)} problem(s)\n  {listing}")
    return items


def _input(path: Path) -> InputFile:
    return InputFile(str(path.resolve()), path.stem)


# --- the model-holding worker -------------------------------------------------------------------


class FileTranscriber:
    """A loaded model that turns whole files into results: each local worker process holds one,
    and Ray Data's actors are instances of it (`__call__` takes a batch)."""

    def __init__(self, spec: ModelSpec):
        from threadpoolctl import threadpool_limits  # installed with librosa (scikit-learn)

        # NumPy's BLAS (feature extraction) gets the model's threads too: N workers each with a
        # core-sized BLAS pool would oversubscribe the CPU, and Ray's actors already run with
        # OMP_NUM_THREADS = num_cpus; different pool sizes change the features' rounding and so
        # (with a weak model) the text, and local and Ray runs must give the same lines.
        self._blas_limits = threadpool_limits(spec.threads)
        self.transcriber = spec.load()
        self.vad = spec.vad

    def transcribe(self, item: InputFile) -> FileResult:
        """The file through the same VAD + ASR session as `voice transcribe` (no answer engine)."""
        from voice.pipeline import transcribe_file
        from voice.types import EndEvent, TranscriptEvent

        events: list[dict[str, Any]] = []
        seconds = 0.0
        try:
            for event in transcribe_file(item.path, self.transcriber, self.vad, item.call_id):
                if isinstance(event, TranscriptEvent):
                    events.append(event.to_dict())
                elif isinstance(event, EndEvent):
                    seconds = event.duration
        except Exception as exc:  # one bad file (AudioError, or worse) must not stop an archive
            log.debug("%s failed", item.path, exc_info=True)
            return FileResult(item.path, item.call_id, error=str(exc) or type(exc).__name__)
        used = self.transcriber.options
        return FileResult(item.path, item.call_id, tuple(events), seconds, self.transcriber.name,
                          device=used.device, compute_type=used.compute_type or "")  # fmt: skip

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        """Ray Data's map_batches entry: columns `path`, `call_id` in; column `result` (each a
        FileResult as JSON, so the driver's writer gets exactly what a local worker returns) out."""
        results = [
            self.transcribe(InputFile(str(path), str(call_id)))
            for path, call_id in zip(batch["path"], batch["call_id"], strict=True)
        ]
        return {"result": [json.dumps(asdict(r), ensure_ascii=False) for r in results]}


# The local worker process's model. Pool initializers can only hand state to later tasks through
# the process's globals; it is set once per worker process and never in the main process.
_worker: FileTranscriber | None = None


def _start_worker(spec: ModelSpec) -> None:
    global _worker
    _worker = FileTranscriber(spec)


def _transcribe_in_worker(item: InputFile) -> FileResult:
    assert _worker is not None, "the pool's initializer loads the model"
    return _worker.transcribe(item)


# --- runners ------------------------------------------------------------------------------------


def run_local(items: Sequence[InputFile], spec: ModelSpec, workers: int) -> Iterator[FileResult]:
    """Results in completion order from `workers` processes, each loading the model once."""
    # spawn, not fork: the parent may hold threads (tqdm's monitor, CTranslate2's pools)
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(spec,)
    )
    try:
        # a bounded window of submitted files, so a million-file archive is not queued at once
        pending: dict[Future[FileResult], InputFile] = {}
        queue = iter(items)
        for item in queue:
            pending[pool.submit(_transcribe_in_worker, item)] = item
            if len(pending) >= 4 * workers:
                break
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                item = pending.pop(future)
                try:
                    yield future.result()
                except BrokenProcessPool as exc:
                    # a worker died (out of memory, a crash in native code): which file did it
                    # is unknown, so name the ones in flight; the output keeps what finished
                    names = ", ".join(sorted({item.path, *(i.path for i in pending.values())}))
                    raise VoiceError(
                        f"a worker process died while transcribing one of: {names}. Files "
                        "already written are kept; run again to go on (move the culprit away)"
                    ) from exc
                if (item := next(queue, None)) is not None:
                    pending[pool.submit(_transcribe_in_worker, item)] = item
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_ray(
    items: Sequence[InputFile], spec: ModelSpec, address: str, workers: int, batch_size: int
) -> Iterator[FileResult]:
    """Results from a Ray Data actor pool of FileTranscribers (see `ray_map`)."""
    rows = [asdict(item) for item in items]
    for row in ray_map(rows, FileTranscriber, spec, address, workers, batch_size):
        yield FileResult.from_dict(json.loads(row["result"]))


def ray_map(
    rows: Sequence[dict[str, Any]], worker: type, spec: ModelSpec, address: str, workers: int,
    batch_size: int,
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """`rows` through a Ray Data actor pool, in completion order: each actor is `worker(spec)`
    (a model-holding callable taking a numpy batch, as FileTranscriber) and needs `spec.threads`
    CPUs, and one GPU when the cluster has them and the device allows (`voice eval --ray` maps
    manifest lines the same way).

    `address` "auto": the cluster in RAY_ADDRESS, else one started on this machine with `ray
    start`, else a new local one (Ray's own search); otherwise a cluster address (`host:6379`,
    or `ray://host:10001` through Ray Client). A Ray already initialised in this process (tests)
    is used as it is. Input paths and the model must be readable on every node."""
    try:
        import ray
        import ray.data
        from ray.data import ActorPoolStrategy
    except ImportError as exc:
        raise ConfigError(
            "--ray needs Ray Data: pip install 'voice[ray]' (make setup does)"
        ) from exc

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=None if address == "auto" else address,
            include_dashboard=False,
            logging_level=logging.WARNING,
        )
    context = ray.data.DataContext.get_current()
    bars = context.enable_progress_bars
    context.enable_progress_bars = False  # ours counts files and audio hours
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        gpus = _ray_gpus(spec.options.device, int(ray.cluster_resources().get("GPU", 0)))
        size = workers or max(1, min(cpus // spec.threads, gpus or cpus))
        ds = ray.data.from_items(list(rows))
        ds = ds.map_batches(
            worker,
            fn_constructor_kwargs={"spec": spec},
            batch_size=batch_size,
            batch_format="numpy",
            compute=ActorPoolStrategy(size=size),  # `concurrency=` is deprecated
            num_cpus=spec.threads,
            num_gpus=1 if gpus else None,  # an actor without a GPU reserved sees none
        )
        yield from ds.iter_rows()
    finally:
        context.enable_progress_bars = bars
        if started_here:
            ray.shutdown()


def _ray_gpus(device: str, cluster_gpus: int) -> int:
    """GPUs the actor pool uses: one per actor when the cluster has them and --device allows."""
    if device == "cpu":
        return 0
    if device == "cuda" and not cluster_gpus:
        raise ConfigError("--device cuda: the Ray cluster has no GPUs; use --device cpu or auto")
    return cluster_gpus


# --- the output ---------------------------------------------------------------------------------


class ResultsWriter:
    """The JSONL output, holding only whole files: a file's lines and its marker are appended in
    one write and fsynced. Opening it drops what an interrupted run left of unfinished files."""

    def __init__(self, path: str | Path, retry_failed: bool = False):
        self.path = Path(path)
        self.finished: dict[str, str] = {}  # file -> DONE or FAILED, as in the output
        self.dropped_lines = self._recover(retry_failed)

    def _recover(self, retry_failed: bool) -> int:
        """Keep the lines of files with a marker (file_failed ones unless `retry_failed`); rewrite
        the file atomically if anything else was there. Returns how many lines were dropped."""
        if not self.path.exists():
            return 0
        raw = self.path.read_bytes()
        records: list[tuple[bytes, dict[str, Any]]] = []
        lines = raw.split(b"\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("file"), str):
                if number == len(lines):
                    continue  # the torn last line of an interrupted write
                raise ConfigError(
                    f"{self.path}:{number} is not a `voice batch` result line; "
                    "choose another --out (this file is left as it is)"
                )
            records.append((line, record))
        for _, record in records:
            kind = record.get("type")
            if kind == DONE or (kind == FAILED and not retry_failed):
                self.finished[record["file"]] = kind
        kept = [line for line, record in records if record["file"] in self.finished]
        dropped = sum(1 for line in lines if line.strip()) - len(kept)
        # a missing final newline would glue the next append onto the last line
        if dropped or not raw.endswith(b"\n"):
            if dropped:
                log.info("%s: dropped %d line(s) of unfinished files", self.path, dropped)
            write_atomic(self.path, b"".join(line + b"\n" for line in kept), private=True)
        return dropped

    def write(self, result: FileResult) -> None:
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.lines()).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # owner-only: transcripts hold callers' words
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        self.finished[result.file] = FAILED if result.error is not None else DONE


# --- the job ------------------------------------------------------------------------------------


@dataclass
class BatchSummary:
    """What a run did; `skipped_*` were already in the output when it started."""

    files: int = 0
    skipped_done: int = 0
    skipped_failed: int = 0
    done: int = 0
    failed: int = 0
    utterances: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    dropped_lines: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (file, error) this run

    @property
    def any_failed(self) -> bool:
        """Whether the output holds a file_failed line (from this run or an earlier one)."""
        return bool(self.failed or self.skipped_failed)

    @property
    def speed(self) -> float:
        """Audio hours per wall hour (model loading included)."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds else 0.0

    def __str__(self) -> str:
        skipped = self.skipped_done + self.skipped_failed
        text = (f"batch: {self.files} file(s): {self.done} transcribed, {self.failed} failed, "
                f"{skipped} already done; {self.utterances} utterance(s), "
                f"{self.audio_seconds / 3600:.3f} h of audio in {self.wall_seconds:.1f} s "
                f"({self.speed:.1f} audio h/h)")  # fmt: skip
        if self.dropped_lines:
            text += f"; {self.dropped_lines} line(s) of unfinished files dropped from the output"
        return text


Runner = Callable[[Sequence[InputFile]], Iterable[FileResult]]


def run_batch(
    inputs: Sequence[str | Path],
    out: str | Path,
    spec: ModelSpec,
    options: BatchOptions = BatchOptions(),
) -> BatchSummary:
    """Transcribe every input not yet finished in `out`, appending each file's lines as it ends."""
    options = options.validate()
    started = time.perf_counter()
    spec = replace(spec, options=replace(spec.options, cpu_threads=options.threads))
    items = discover_inputs(inputs)
    writer = ResultsWriter(out, options.retry_failed)
    todo = [item for item in items if item.path not in writer.finished]
    summary = BatchSummary(files=len(items), dropped_lines=writer.dropped_lines)
    for item in items:
        state = writer.finished.get(item.path)
        summary.skipped_done += state == DONE
        summary.skipped_failed += state == FAILED
    if todo:
        if not options.ray:  # a Ray cluster's nodes need the model, not necessarily this machine
            spec.check()
        runner = _runner(spec, options, len(todo))
        _consume(runner(todo), writer, summary, len(todo), options.progress)
    summary.wall_seconds = time.perf_counter() - started
    return summary


def _runner(spec: ModelSpec, options: BatchOptions, files: int) -> Runner:
    if options.ray:
        address = options.ray
        return lambda todo: run_ray(todo, spec, address, options.workers, options.batch_size)
    cores = os.cpu_count() or 1
    workers = min(files, options.workers or max(1, cores // spec.threads))
    return lambda todo: run_local(todo, spec, workers)


def _consume(
    results: Iterable[FileResult], writer: ResultsWriter, summary: BatchSummary, total: int,
    progress: bool,
) -> None:  # fmt: skip
    from tqdm import tqdm

    # disable=None: a bar only when stderr is a terminal (no bar in logs and tests)
    with tqdm(total=total, unit="file", file=sys.stderr, disable=None if progress else True) as bar:
        for result in results:
            writer.write(result)
            if result.error is not None:
                summary.failed += 1
                summary.failures.append((result.file, result.error))
                log.error("%s", result.error)
            else:
                summary.done += 1
                summary.utterances += len(result.events)
                summary.audio_seconds += result.seconds
            bar.update(1)
            bar.set_postfix_str(f"{summary.audio_seconds / 3600:.2f} h audio", refresh=False)


__all__ = [
    "BatchOptions",
    "BatchSummary",
    "FileResult",
    "FileTranscriber",
    "InputFile",
    "ModelSpec",
    "ResultsWriter",
    "discover_inputs",
    "manifest_inputs",
    "run_batch",
    "run_local",
    "ray_map",
    "run_ray",
]
