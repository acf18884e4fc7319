"""The model registry: versioned, checked artifacts per model name, and their stages.

Layout under the registry's root (``MODEL_REGISTRY_URL``: ``file://PATH`` by default, a
relative path being relative to the working directory; any fsspec URL as an option)::

    NAME/index.json             stage of every version, and the history of production ones
    NAME/VERSION/metadata.json  what the version is (never rewritten after registration)
    NAME/VERSION/<artifacts>    booster.ubj, feature_reference.npy, report.json...

Versions are integers counted from 1. The metadata records the training window, the feature
list and its hash, the metrics, the parent version, and the sha256 of every artifact file; its
own ``content_hash`` (sha256 of the canonical metadata) is recorded again in ``index.json`` and
in the ModelUpdate record on ``models.updates``. Loading recomputes all of them and refuses a
version whose artifact or metadata changed: integrity against corruption and stray edits, not
authenticity (whoever can rewrite both files can forge a version; protect the folder).

Artifacts are data, never code: XGBoost's own UBJSON/JSON for boosters, ``.npy`` read with
``allow_pickle=False``, and JSON. Nothing is pickled or unpickled.

The stage lives in ``index.json``, the one mutable file of a model, written whole and
atomically (a temporary file renamed over it) under a file lock, so a promotion is one write
and there is never a moment with two production versions. The lock is local: on an fsspec
store two concurrent promotions of one model are last-writer-wins.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import io
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import numpy as np

from models.base import FloatArray
from models.drift import FeatureReference
from models.features import feature_set_hash
from models.traffic import TrafficSplit
from models.training import (
    BOOSTER_FILE,
    REFERENCE_FILE,
    REPORT_FILE,
    XGBOOST_CLASSIFIER,
    FailureRiskModel,
    feature_list_hash,
    summary_metrics,
)

Record = dict[str, Any]

STAGES = ("candidate", "production", "archived")
_ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\.(ubj|json|npy)$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_INDEX = "index.json"
_METADATA = "metadata.json"


class RegistryError(Exception):
    """A registry operation cannot be done (unknown model or version, wrong stage...)."""


class UnknownModelError(RegistryError):
    """No such model, or no such version of it."""


class IntegrityError(RegistryError):
    """An artifact or the metadata of a version is not what was registered."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def npy_bytes(array: FloatArray) -> bytes:
    """``array`` as an ``.npy`` file (no pickled objects)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def read_npy(data: bytes) -> FloatArray:
    """An ``.npy`` file's array; refuses object arrays (they would need unpickling)."""
    array: FloatArray = np.load(io.BytesIO(data), allow_pickle=False)
    return array


class _Store(Protocol):
    """The few file operations the registry needs, on a folder or an fsspec file system."""

    def read(self, path: str) -> bytes: ...

    def write(self, path: str, data: bytes) -> None:
        """Write a whole file (atomically where the file system allows)."""
        ...

    def exists(self, path: str) -> bool: ...

    def create_folder(self, path: str) -> bool:
        """Create ``path``; False if it already existed."""
        ...

    def folders(self, path: str) -> list[str]:
        """Names of the sub-folders of ``path`` (empty when it does not exist)."""
        ...

    def uri(self, path: str) -> str: ...

    def lock(self, path: str) -> contextlib.AbstractContextManager[None]: ...


class _LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def read(self, path: str) -> bytes:
        return (self.root / path).read_bytes()

    def write(self, path: str, data: bytes) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def exists(self, path: str) -> bool:
        return (self.root / path).exists()

    def create_folder(self, path: str) -> bool:
        (self.root / path).parent.mkdir(parents=True, exist_ok=True)
        try:
            (self.root / path).mkdir()
        except FileExistsError:
            return False
        return True

    def folders(self, path: str) -> list[str]:
        folder = self.root / path
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def uri(self, path: str) -> str:
        return (self.root / path).resolve().as_uri()

    @contextlib.contextmanager
    def lock(self, path: str) -> Iterator[None]:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


class _FsspecStore:
    def __init__(self, url: str) -> None:
        try:
            fsspec = importlib.import_module("fsspec")
        except ImportError:
            raise RegistryError(
                f"MODEL_REGISTRY_URL {url!r} needs fsspec (and the file system's own package, "
                "e.g. s3fs or gcsfs): pip install fsspec; or use a folder (file://PATH)"
            ) from None
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = str(root).rstrip("/")
        self.protocol = url.split("://", 1)[0]

    def _path(self, path: str) -> str:
        return f"{self.root}/{path}"

    def read(self, path: str) -> bytes:
        return bytes(self.fs.cat_file(self._path(path)))

    def write(self, path: str, data: bytes) -> None:
        self.fs.pipe_file(self._path(path), data)

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(self._path(path)))

    def create_folder(self, path: str) -> bool:
        # Object stores have no folders: a version exists once its marker file does.
        marker = f"{path}/.created"
        if self.exists(marker):
            return False
        self.write(marker, b"")
        return True

    def folders(self, path: str) -> list[str]:
        if not self.fs.exists(self._path(path)):
            return []
        entries = self.fs.ls(self._path(path), detail=True)
        return sorted(str(e["name"]).rstrip("/").rsplit("/", 1)[-1] for e in entries
                      if e.get("type") == "directory")  # fmt: skip

    def uri(self, path: str) -> str:
        return f"{self.protocol}://{self._path(path)}"

    @contextlib.contextmanager
    def lock(self, path: str) -> Iterator[None]:
        yield


def _store_for(url: str) -> _Store:
    if "://" not in url:
        return _LocalStore(Path(url))
    scheme, rest = url.split("://", 1)
    if scheme == "file":
        # file://relative/path stays relative to the working directory; file:///abs is absolute
        return _LocalStore(Path(rest if not rest.startswith("/") else urlparse(url).path))
    return _FsspecStore(url)


@dataclass(frozen=True)
class ModelVersion:
    """One registered version: its metadata, its stage and where it is."""

    model: str
    version: str
    kind: str
    created_at: str
    since: str
    until: str
    features: list[str]
    feature_hash: str
    feature_set: str
    metrics: dict[str, float]
    params: dict[str, Any]
    parent: str | None
    artifacts: dict[str, str]
    content_hash: str = ""
    stage: str = "candidate"
    uri: str = ""
    decision: dict[str, Any] = field(default_factory=dict)
    """The promotion test that promoted or refused this version (empty until one did)."""

    def metadata(self) -> dict[str, Any]:
        """What ``metadata.json`` holds: everything but the stage, the location and the
        decision (which the index records)."""
        record = asdict(self)
        del record["stage"], record["uri"], record["decision"]
        return record

    def computed_hash(self) -> str:
        """sha256 of the canonical metadata (without its own ``content_hash``)."""
        record = self.metadata()
        del record["content_hash"]
        return _sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadedModel:
    """A checked, loaded version: call :meth:`score` with FeatureVector records."""

    version: ModelVersion
    model: FailureRiskModel
    reference: FeatureReference | None = None
    extra: dict[str, bytes] = field(default_factory=dict)

    def score(self, feature_vectors: Sequence[Record]) -> FloatArray:
        """Failure probability within the model's horizon, one per FeatureVector record."""
        return self.model.score(feature_vectors)


@dataclass(frozen=True)
class Decision:
    """Why a candidate was promoted or refused: the test's record (plain JSON) and the
    numbers a ModelUpdate carries (``PromotionTest.as_dict()`` and ``.metrics()``)."""

    record: Mapping[str, Any]
    metrics: Mapping[str, float]


def _iso(t_ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_ms / 1000))


def _now_ms() -> int:
    return int(time.time() * 1000)


class ModelRegistry:
    """Versioned model artifacts with stages, on a folder or any fsspec URL.

    Parameters
    ----------
    url
        ``MODEL_REGISTRY_URL`` (default ``file://.stack/models``): ``file://PATH`` or a plain
        path for a folder, ``s3://...``, ``gs://...`` and the like through fsspec (which must
        then be installed).

    Examples
    --------
    >>> import tempfile
    >>> registry = ModelRegistry(tempfile.mkdtemp())
    >>> update = registry.register("demo", {"weights.npy": npy_bytes(np.ones(3))},
    ...     kind="array", features=["cpu:5m:mean"], since_ms=0, until_ms=3_600_000)
    >>> update["action"], update["version"], update["stage"]
    ('REGISTERED', '1', 'candidate')
    >>> [u["action"] for u in registry.promote("demo", "1")]
    ['PROMOTED']
    >>> version, files = registry.read_artifacts("demo", "1")
    >>> version.stage, read_npy(files["weights.npy"]).tolist()
    ('production', [1.0, 1.0, 1.0])
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._store = _store_for(url)

    # -- reading --------------------------------------------------------------------------------
    def models(self) -> list[str]:
        """Names of the registered models."""
        return [m for m in self._store.folders("") if self._store.exists(f"{m}/{_INDEX}")]

    def _index(self, name: str) -> dict[str, Any]:
        if not _MODEL_NAME.match(name):
            raise RegistryError(
                f"bad model name {name!r}: use letters, digits, '_', '-' and '.' only"
            )
        if not self._store.exists(f"{name}/{_INDEX}"):
            known = ", ".join(self.models()) or "none"
            raise UnknownModelError(
                f"no model {name!r} in the registry at {self.url} (models: {known}); "
                "train one with `foresight train`"
            )
        index: dict[str, Any] = json.loads(self._store.read(f"{name}/{_INDEX}"))
        return index

    def _version(self, name: str, version: str, index: Mapping[str, Any]) -> ModelVersion:
        if version not in index["versions"]:
            known = ", ".join(sorted(index["versions"], key=int)) or "none"
            raise UnknownModelError(
                f"model {name!r} has no version {version!r} (versions: {known})"
            )
        path = f"{name}/{version}/{_METADATA}"
        uri = self._store.uri(f"{name}/{version}")
        try:
            raw = json.loads(self._store.read(path))
            entry = index["versions"][version]
            found = ModelVersion(
                **raw, stage=entry["stage"], uri=uri, decision=entry.get("decision", {})
            )
        except (ValueError, TypeError, OSError) as error:
            raise IntegrityError(
                f"metadata of {name} version {version} at {uri} is unreadable ({error}); "
                f"it was corrupted: promote or train another version"
            ) from error
        recorded = index["versions"][version]["content_hash"]
        computed = found.computed_hash()
        if not (recorded == found.content_hash == computed):
            raise IntegrityError(
                f"metadata of {name} version {version} at {uri} was changed after registration "
                f"(hash registered {recorded[:12]}, in the file {found.content_hash[:12]}, of "
                f"its content {computed[:12]}); do not edit a version: train and register a new "
                "one"
            )
        return found

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name``, oldest first."""
        index = self._index(name)
        return [self._version(name, v, index) for v in sorted(index["versions"], key=int)]

    def show(self, name: str, version: str | None = None) -> ModelVersion:
        """One version of ``name``; by default the production one, else the newest."""
        index = self._index(name)
        if version is None:
            history = index["production"]
            version = history[-1] if history else max(index["versions"], key=int)
        return self._version(name, str(version), index)

    def revision(self, name: str) -> str:
        """A token that changes whenever a version of ``name`` is registered, promoted or
        rolled back (the hash of its index); empty when there is no such model."""
        if not _MODEL_NAME.match(name) or not self._store.exists(f"{name}/{_INDEX}"):
            return ""
        return _sha256(self._store.read(f"{name}/{_INDEX}"))

    def production(self, name: str) -> ModelVersion | None:
        """The version of ``name`` in production, or None."""
        index = self._index(name)
        history = index["production"]
        return self._version(name, history[-1], index) if history else None

    def split(self, name: str) -> TrafficSplit:
        """The A/B split of ``name``: each candidate version's percentage of the entities
        (:mod:`models.traffic`); empty when none is set."""
        return TrafficSplit(dict(self._index(name).get("split", {})))

    def read_artifacts(self, name: str, version: str) -> tuple[ModelVersion, dict[str, bytes]]:
        """A version's metadata and artifact files, each checked against its sha256."""
        found = self._version(name, version, self._index(name))
        files = {}
        for file_name, expected in found.artifacts.items():
            try:
                data = self._store.read(f"{name}/{version}/{file_name}")
            except OSError as error:
                raise IntegrityError(
                    f"artifact {file_name} of {name} version {version} at {found.uri} is "
                    f"missing or unreadable ({error}); promote or train another version"
                ) from error
            actual = _sha256(data)
            if actual != expected:
                raise IntegrityError(
                    f"artifact {file_name} of {name} version {version} at {found.uri} is "
                    f"corrupted or was tampered with: sha256 {actual[:12]}, registered "
                    f"{expected[:12]}; refusing to load it. Promote or train another version"
                )
            files[file_name] = data
        return found, files

    def load(self, name: str, version: str) -> LoadedModel:
        """A version, checked and loaded, ready to :meth:`LoadedModel.score`."""
        found, files = self.read_artifacts(name, version)
        if found.kind != XGBOOST_CLASSIFIER or BOOSTER_FILE not in files:
            raise RegistryError(
                f"{name} version {version} is a {found.kind!r} with files {sorted(files)}; "
                f"only {XGBOOST_CLASSIFIER!r} versions with a {BOOSTER_FILE} load as models "
                "(read_artifacts reads any version's files)"
            )
        model = FailureRiskModel.from_booster_bytes(
            files.pop(BOOSTER_FILE),
            found.features,
            float(found.params["horizon_s"]),
            float(found.params["threshold"]),
        )
        reference = None
        if REFERENCE_FILE in files:
            reference = FeatureReference.from_array(read_npy(files.pop(REFERENCE_FILE)))
        return LoadedModel(found, model, reference, files)

    def load_production(self, name: str) -> LoadedModel | None:
        """The production version of ``name``, loaded; None when none is (or no such model).

        What a worker calls at start and on every ModelUpdate of ``name``: the registry, not
        the update, says which version serves.
        """
        if not self._store.exists(f"{name}/{_INDEX}"):
            return None
        found = self.production(name)
        return None if found is None else self.load(name, found.version)

    # -- changing -------------------------------------------------------------------------------
    def _update(
        self,
        found: ModelVersion,
        action: str,
        stage: str,
        now_ms: int,
        evidence: Mapping[str, float] | None = None,
    ) -> Record:
        """The ModelUpdate record of a change (schema ``model_update``); ``evidence`` (the
        promotion test's numbers) joins the registration metrics."""
        return {
            "model": found.model,
            "version": found.version,
            "action": action,
            "stage": stage,
            "uri": found.uri,
            "content_hash": found.content_hash,
            "feature_hash": found.feature_hash,
            "metrics": {**found.metrics, **(evidence or {})},
            "event_time": now_ms,
        }

    def register(
        self,
        name: str,
        artifacts: Mapping[str, bytes],
        *,
        kind: str,
        features: Sequence[str],
        since_ms: int,
        until_ms: int,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
        parent: str | None = None,
        now_ms: int | None = None,
    ) -> Record:
        """Store a new version of ``name`` as a candidate; returns its ModelUpdate record.

        ``artifacts`` maps file names (``.ubj``, ``.json`` or ``.npy``) to their bytes.
        """
        if not _MODEL_NAME.match(name):
            raise RegistryError(
                f"bad model name {name!r}: use letters, digits, '_', '-' and '.' only"
            )
        bad = [f for f in artifacts if not _ARTIFACT_NAME.match(f) or f == _METADATA]
        if bad or not artifacts:
            raise RegistryError(
                f"artifact names {bad or '(none given)'} refused: give at least one file, "
                "named NAME.ubj (XGBoost), NAME.npy (arrays) or NAME.json, not metadata.json; "
                "other formats (pickle) are not stored"
            )
        now = _now_ms() if now_ms is None else now_ms
        with self._store.lock(f"{name}/.lock"):
            versions = [int(v) for v in self._store.folders(name) if v.isdigit()]
            number = max(versions, default=0) + 1
            while not self._store.create_folder(f"{name}/{number}"):
                number += 1
            version = str(number)
            for file_name, data in artifacts.items():
                self._store.write(f"{name}/{version}/{file_name}", data)
            draft = ModelVersion(
                model=name,
                version=version,
                kind=kind,
                created_at=_iso(now),
                since=_iso(since_ms),
                until=_iso(until_ms),
                features=list(features),
                feature_hash=feature_list_hash(features),
                feature_set=feature_set_hash(),
                metrics={k: float(v) for k, v in (metrics or {}).items()},
                params=dict(params or {}),
                parent=parent,
                artifacts={f: _sha256(d) for f, d in artifacts.items()},
            )
            found = ModelVersion(
                **{**draft.metadata(), "content_hash": draft.computed_hash()},
                uri=self._store.uri(f"{name}/{version}"),
            )
            self._store.write(
                f"{name}/{version}/{_METADATA}",
                json.dumps(found.metadata(), indent=2, sort_keys=True).encode(),
            )
            index = (
                json.loads(self._store.read(f"{name}/{_INDEX}"))
                if self._store.exists(f"{name}/{_INDEX}")
                else {"production": [], "versions": {}}
            )
            index["versions"][version] = {"stage": "candidate", "content_hash": found.content_hash}
            self._write_index(name, index)
        return self._update(found, "REGISTERED", "candidate", now)

    def register_model(
        self,
        model: FailureRiskModel,
        reference: FeatureReference,
        report: Mapping[str, Any],
        *,
        since_ms: int,
        until_ms: int,
        parent: str | None = None,
        now_ms: int | None = None,
    ) -> Record:
        """Register a trained failure-risk model with its feature reference and report.

        The files are ``booster.ubj`` (XGBoost's UBJSON), ``feature_reference.npy`` and
        ``report.json``; the metrics are the report's headline numbers.
        """
        return self.register(
            model.name,
            {
                BOOSTER_FILE: model.booster_bytes(),
                REFERENCE_FILE: npy_bytes(reference.to_array()),
                REPORT_FILE: json.dumps(report, indent=2).encode(),
            },
            kind=XGBOOST_CLASSIFIER,
            features=model.features,
            since_ms=since_ms,
            until_ms=until_ms,
            metrics=summary_metrics(report),
            params={**report["params"], "horizon_s": model.horizon_s, "threshold": model.threshold},
            parent=parent,
            now_ms=now_ms,
        )

    def _write_index(self, name: str, index: Mapping[str, Any]) -> None:
        self._store.write(f"{name}/{_INDEX}", json.dumps(index, indent=2).encode())

    def promote(
        self,
        name: str,
        version: str,
        now_ms: int | None = None,
        decision: Decision | None = None,
    ) -> list[Record]:
        """Put ``version`` in production; the previous production version is archived.

        Returns the ModelUpdate records in the order to produce them: ARCHIVED first,
        PROMOTED last, so the newest record of the model's key says what serves. A
        ``decision`` (the promotion test that chose the version) is kept in the index and its
        numbers ride on the PROMOTED record.
        """
        now = _now_ms() if now_ms is None else now_ms
        with self._store.lock(f"{name}/.lock"):
            index = self._index(name)
            found = self._version(name, version, index)
            if found.stage == "production":
                raise RegistryError(f"{name} version {version} is already in production")
            self.read_artifacts(name, version)  # refuse to promote what cannot load
            history = index["production"]
            updates = []
            if history:
                previous = self._version(name, history[-1], index)
                index["versions"][previous.version]["stage"] = "archived"
                updates.append(self._update(previous, "ARCHIVED", "archived", now))
            history.append(version)
            index["versions"][version]["stage"] = "production"
            index.get("split", {}).pop(version, None)  # production serves the rest
            if decision is not None:
                index["versions"][version]["decision"] = dict(decision.record, at=_iso(now))
            self._write_index(name, index)
        evidence = decision.metrics if decision else None
        updates.append(self._update(found, "PROMOTED", "production", now, evidence))
        return updates

    def refuse(
        self, name: str, version: str, decision: Decision, now_ms: int | None = None
    ) -> list[Record]:
        """Archive candidate ``version``, which a promotion test found no better.

        The test is kept in the index; the ARCHIVED record carries its numbers, so the
        refusal is on ``models.updates`` as a promotion is (and shadow scoring stops).
        """
        now = _now_ms() if now_ms is None else now_ms
        with self._store.lock(f"{name}/.lock"):
            index = self._index(name)
            found = self._version(name, version, index)
            if found.stage != "candidate":
                raise RegistryError(
                    f"{name} version {version} is {found.stage}, not a candidate: only a "
                    "candidate can be refused"
                )
            index["versions"][version]["stage"] = "archived"
            index["versions"][version]["decision"] = dict(decision.record, at=_iso(now))
            index.get("split", {}).pop(version, None)
            self._write_index(name, index)
        return [self._update(found, "ARCHIVED", "archived", now, decision.metrics)]

    def set_split(self, name: str, split: TrafficSplit, now_ms: int | None = None) -> list[Record]:
        """Serve candidate versions of ``name`` to shares of the entities (an A/B test;
        production serves the rest); an empty split ends it.

        Returns a SPLIT ModelUpdate record for every version whose share changed, its new
        percentage as the ``traffic_percent`` metric (0 for a version that left the split).
        Raises :class:`RegistryError` for a version that is not a loadable candidate.
        """
        now = _now_ms() if now_ms is None else now_ms
        with self._store.lock(f"{name}/.lock"):
            index = self._index(name)
            for version in split.shares:
                found = self._version(name, version, index)
                if found.stage != "candidate":
                    raise RegistryError(
                        f"{name} version {version} is {found.stage}: only candidates take a "
                        "share of the entities (production serves the rest)"
                    )
                self.read_artifacts(name, version)  # refuse to split to what cannot load
            before = dict(index.get("split", {}))
            index["split"] = dict(split.shares)
            self._write_index(name, index)
        changed = sorted(set(before) | set(split.shares), key=int)
        return [
            {
                **self._update(
                    self._version(name, v, index), "SPLIT", index["versions"][v]["stage"], now
                ),
                "metrics": {"traffic_percent": split.shares.get(v, 0.0)},
            }
            for v in changed
            if before.get(v) != split.shares.get(v)
        ]

    def rollback(self, name: str, now_ms: int | None = None) -> list[Record]:
        """Back to the version that was in production before the current one.

        The current one is archived. Returns ARCHIVED then ROLLED_BACK (the restored
        version, now in production).
        """
        now = _now_ms() if now_ms is None else now_ms
        with self._store.lock(f"{name}/.lock"):
            index = self._index(name)
            history = index["production"]
            if len(history) < 2:
                current = history[-1] if history else "none"
                raise RegistryError(
                    f"{name} has no earlier production version to roll back to (production: "
                    f"{current}); promote a version instead"
                )
            current_version = self._version(name, history[-1], index)
            restored = self._version(name, history[-2], index)
            self.read_artifacts(name, restored.version)
            history.pop()
            index["versions"][current_version.version]["stage"] = "archived"
            index["versions"][restored.version]["stage"] = "production"
            self._write_index(name, index)
        return [
            self._update(current_version, "ARCHIVED", "archived", now),
            self._update(restored, "ROLLED_BACK", "production", now),
        ]
