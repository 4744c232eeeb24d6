"""Where a study's files live: a local folder, an NFS path, or an `s3://` / `gs://` URI.

Ray Tune writes trial checkpoints straight to `storage_path` (any pyarrow.fs URI), so any node
can resume any trial. kdtune's own outputs (Parquet tables, figures, the MLflow parent-run id)
are written locally first and, for a URI, copied next to Tune's files with pyarrow.fs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs

# What this launch of a study uses, by kind and study name. Tune pickles a study's callback and
# scheduler with the experiment and, on --resume, restores the copies of the first launch: a
# store or a file they held would be where the study was then (another folder, another store).
# So they pickle only the study's name and look up here what the running launch has put.
_THIS_LAUNCH: dict[tuple[str, str], object] = {}
ROUTE, RUNGS_FILE = "route", "rungs_file"  # the tracking callback's MLflow route; MO-ASHA's rungs


def for_this_launch(kind: str, study: str, value: object) -> None:
    _THIS_LAUNCH[kind, study] = value


def this_launchs(kind: str, study: str) -> object | None:
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
