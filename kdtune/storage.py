"""Where a study's files live: a local folder, an NFS path, or an `s3://` / `gs://` URI.

Ray Tune writes trial checkpoints straight to `storage_path` (any pyarrow.fs URI), so any node
can resume any trial. kdtune's own outputs (Parquet tables, figures, the MLflow parent-run id)
are written locally first and, for a URI, copied next to Tune's files with pyarrow.fs.

The folder's guards are here too: one study at a time in it (`study_lock`), nothing unpickled
from a folder others may write (`check_resume_safe`), no resume from a Tune state a full disk
cut short (`check_tune_state`), and the study's id file (`study_file`).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import stat
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs

from kdtune import atomic
from kdtune.config import ConfigError, Log

# What this launch of a study uses, by kind and study name. Tune pickles a study's callback and
# scheduler with the experiment and, on --resume, restores the copies of the first launch: a
# store or a file they held would be where the study was then (another folder, another store).
# So they pickle only the study's name and look up here what the running launch has put.
_THIS_LAUNCH: dict[tuple[str, str], object] = {}
ROUTE, RUNGS_FILE = "route", "rungs_file"  # the tracking callback's MLflow route; MO-ASHA's rungs
TRIAL_LINKS = "trial_links"  # a search's TrialLinks
SNAPSHOTS = "snapshots"  # the callback.SnapshotPacer that the scheduler paces and the callback asks


@dataclass
class TrialLinks:
    """What the searcher and the tracking callback, both in the driver, tell each other so that
    a trial's Optuna trial and MLflow run name each other: Tune trial id -> its Optuna trial's
    number (the searcher, when it asks) and -> its run id (the callback, when it makes the run);
    `run_url(run_id)` the run's page in the MLflow UI."""

    run_url: Callable[[str], str]
    numbers: dict[str, int] = field(default_factory=dict)
    runs: dict[str, str] = field(default_factory=dict)


def trial_links(study: str) -> TrialLinks | None:
    """The search's TrialLinks in this launch; None for a grid, or outside a study's driver."""
    links = _THIS_LAUNCH.get((TRIAL_LINKS, study))
    return links if isinstance(links, TrialLinks) else None


def for_this_launch(kind: str, study: str, value: object) -> None:
    _THIS_LAUNCH[kind, study] = value


def launch_value(kind: str, study: str) -> object | None:
    """What `for_this_launch` put for the study, or None."""
    return _THIS_LAUNCH.get((kind, study))


LOCAL_MIRROR = Path(".kdtune")  # local copies of a remote study's outputs, in the working folder


def is_uri(path: str) -> bool:
    return "://" in path


@dataclass(frozen=True)
class StudyStorage:
    root: str  # what Tune gets as storage_path: an absolute folder or a URI
    name: str  # the study name: Tune's experiment folder under root

    @classmethod
    def of(cls, storage_path: str, name: str) -> StudyStorage:
        root = (
            storage_path.rstrip("/") if is_uri(storage_path) else str(Path(storage_path).resolve())
        )
        return cls(root, name)

    @property
    def remote(self) -> bool:
        return is_uri(self.root)

    @property
    def experiment_path(self) -> str:
        return f"{self.root}/{self.name}"

    @property
    def local_dir(self) -> Path:
        return (LOCAL_MIRROR / self.name).resolve() if self.remote else Path(self.root) / self.name

    @property
    def teacher_cache(self) -> Path:
        # Teachers reach the trials through Ray's object store, so the cache is the driver's own.
        return (
            (LOCAL_MIRROR / "teachers").resolve() if self.remote else Path(self.root) / "teachers"
        )

    def publish(self, *paths: Path) -> None:
        """Copy local output files next to Tune's files (no-op for local storage)."""
        if not self.remote:
            return
        filesystem, folder = pyarrow.fs.FileSystem.from_uri(self.experiment_path)
        filesystem.create_dir(folder, recursive=True)
        for path in paths:
            pyarrow.fs.copy_files(str(path), f"{self.experiment_path}/{path.name}")

    def read_text(self, name: str) -> str | None:
        """A study file, from the local folder or else from remote storage; None if absent."""
        local = self.local_dir / name
        if local.exists():
            return local.read_text()
        if not self.remote:
            return None
        filesystem, path = pyarrow.fs.FileSystem.from_uri(f"{self.experiment_path}/{name}")
        if filesystem.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
            return None
        with filesystem.open_input_stream(path) as stream:
            return stream.read().decode()


STUDY_FILE = "study.json"  # the study's id and the spec of its first launch


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".kdtune_write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"storage_path: cannot write to {str(folder)!r} ({error.strerror}); "
                          "choose a writable folder with --storage") from None  # fmt: skip


@contextmanager
def study_lock(folder: Path, name: str) -> Iterator[None]:
    """Hold the study folder for this process: a second study of the same name in the same
    folder would share Tune's state and overwrite the results. The OS releases the lock when
    the process ends, however it ends, so a crashed study can be resumed at once."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ConfigError(f"name: study {name!r} is running already in {folder} ({holder}); "
                              "wait for it to end, or give this one another --name") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_resume_safe(storage: StudyStorage) -> None:
    """--resume unpickles Tune's state (tuner.pkl, the searcher's state) from the study folder,
    so whoever can write there can run code as the user: refuse a local folder, or a file in
    it, that another user owns or that group or others may write."""
    if storage.remote:
        return
    folder = Path(storage.experiment_path)
    if not folder.exists():
        return
    for path in (Path(storage.root), folder, *(p for p in folder.iterdir() if p.is_file())):
        info = path.stat()
        writable = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if info.st_uid != os.getuid() or writable:
            why = "another user owns it" if info.st_uid != os.getuid() else (
                f"group or others may write it (mode {stat.filemode(info.st_mode)})")
            raise ConfigError(f"storage_path: will not resume from {path}: {why}, and --resume "
                              "loads pickled state from the study folder, which would run code "
                              "as you; `chmod go-w` it (and check what is in it), or start the "
                              "study anew without --resume")  # fmt: skip


def check_tune_state(storage: StudyStorage, log: Log) -> None:
    """Tune writes its experiment state in place, so a disk that fills up can cut it short, and
    Tune then restarts the study from nothing. Set a damaged state aside when an older one is
    there to fall back on; else say that this study cannot resume."""
    folder = Path(storage.experiment_path)
    states = sorted(folder.glob("experiment_state-*.json")) if not storage.remote else []
    while states:
        latest = states.pop()
        try:
            json.loads(latest.read_text())
            return
        except (ValueError, UnicodeDecodeError):
            if not states:
                raise ConfigError(f"storage_path: Tune's saved state {latest} is cut short (a "
                                  "disk that filled up while Tune wrote it?), so this study "
                                  "cannot resume; run it anew under another --name (what "
                                  "finished is in results.parquet and MLflow)") from None
            latest.rename(latest.with_name(latest.name + ".damaged"))
            log(f"study: {latest.name} is cut short; resuming from the state saved before it")


def study_file(storage: StudyStorage) -> dict[str, Any] | None:
    """The study folder's STUDY_FILE ({"id", "spec"}), or None where none was written (a study
    that never started, or one started by a kdtune older than the file)."""
    text = storage.read_text(STUDY_FILE)
    if text is None:
        return None
    try:
        return dict(json.loads(text))
    except (ValueError, TypeError):
        raise ConfigError(f"storage_path: {storage.experiment_path}/{STUDY_FILE} is damaged; "
                          "move it away to resume without the checks it allows (the same "
                          "spec, the study's own Optuna study)") from None  # fmt: skip


def keep_study_file(storage: StudyStorage, study_id: str, spec: Mapping[str, Any]) -> None:
    atomic.write_text(storage.local_dir / STUDY_FILE, json.dumps({"id": study_id, "spec": spec}))
    storage.publish(storage.local_dir / STUDY_FILE)


def study_identity(saved: Mapping[str, Any] | None, resume: bool) -> str:
    """The study's id: its folder's (a fresh start in the same folder replaces the same study),
    else a new one; "" for a resumed study started by a kdtune older than STUDY_FILE."""
    if saved is not None:
        return str(saved["id"])
    return "" if resume else uuid.uuid4().hex
