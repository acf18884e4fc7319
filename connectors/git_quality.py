"""Code-quality snapshots measured from a git repository's history, one per commit.

:func:`backfill` walks the first-parent history of a ref, oldest first, and measures the
Python tree at each commit into a CodeQualitySnapshot record:

* **complexity**: the cyclomatic complexity of every function and method (``radon``), mean and
  highest, over the source (tests excluded);
* **size**: source files, lines of code (radon's SLOC: not blank, not comment) and functions;
  the same for tests (``tests/`` or ``test/`` folders, ``test_*.py``, ``*_test.py``,
  ``conftest.py``) and their count of ``test*`` functions and methods;
* **lint warnings**: ``ruff check --isolated`` (ruff's default rules, whatever the project's
  own configuration was at the time), when ruff is on the PATH or beside this Python;
* **duplication**: the share of the source's 6-line windows (stripped lines, blank lines and
  comments left out) that occur more than once in the source;
* **churn**: lines added and deleted and files changed by the commit against its first parent,
  in every file (``git log --numstat``).

Files are read with ``git cat-file`` (no checkout; the repository is never changed) and each
file version (blob) is measured once, so a commit costs what it changed. Coverage cannot be
read from history: it is left null.

Examples
--------
>>> measure_file("tests/test_shop.py", "def test_a():\\n    assert 1\\n").test_count
1
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from radon.complexity import cc_visit
from radon.raw import analyze
from radon.visitors import Function

log = logging.getLogger(__name__)
Record = dict[str, Any]

SOURCE = "foresight-backfill"
WINDOW = 6
"""Lines in a duplication window."""
MAX_FILE_BYTES = 1 << 20
"""Larger files (generated code, vendored bundles) are left out of every measure."""


class GitError(RuntimeError):
    """git refused (not a repository, an unknown ref); the message says what git said."""


def _git(repo: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
        )
    except FileNotFoundError:
        raise GitError("git is not installed (it is on PATH nowhere)") from None
    except subprocess.CalledProcessError as error:
        raise GitError(f"git {' '.join(args[:2])} in {repo}: {error.stderr.strip()}") from None
    return done.stdout


@dataclass(frozen=True)
class Commit:
    """One commit of the history, with its churn against its first parent."""

    sha: str
    time_ms: int
    added: int
    deleted: int
    files_changed: int


def history(
    repo: Path, ref: str = "HEAD", since: str | None = None, max_commits: int | None = None
) -> list[Commit]:
    """The first-parent commits of ``ref``, oldest first: those after ``since`` (anything
    ``git log --since`` takes), the newest ``max_commits`` of them when given."""
    args = ["log", "--first-parent", "--diff-merges=first-parent", "--numstat", "--reverse",
            "--format=%x00%H %ct"]  # fmt: skip
    if since:
        args.append(f"--since={since}")
    if max_commits:
        args.append(f"--max-count={max_commits}")
    commits = []
    for chunk in _git(repo, *args, ref, "--").split("\x00")[1:]:
        head, _, stats = chunk.partition("\n")
        sha, seconds = head.split()
        added = deleted = files = 0
        for line in stats.splitlines():
            parts = line.split("\t")
            if len(parts) < 3:
                continue
            files += 1
            added += int(parts[0]) if parts[0].isdigit() else 0  # "-": a binary file
            deleted += int(parts[1]) if parts[1].isdigit() else 0
        commits.append(Commit(sha, int(seconds) * 1000, added, deleted, files))
    return commits


def is_test(path: str) -> bool:
    """Whether a Python file is a test, by where it is and what it is called."""
    parts = PurePosixPath(path).parts
    name = parts[-1]
    return (
        any(part in ("tests", "test") for part in parts[:-1])
        or name.startswith("test_")
        or name.endswith("_test.py")
        or name == "conftest.py"
    )


@dataclass(frozen=True)
class FileMeasure:
    """What one version of one file contributes."""

    test: bool
    lines: int
    complexities: tuple[int, ...]
    test_count: int
    windows: tuple[bytes, ...]


def _windows(source: str) -> tuple[bytes, ...]:
    kept = [s for s in (line.strip() for line in source.splitlines()) if s and s[0] != "#"]
    return tuple(
        hashlib.blake2b("\n".join(kept[i : i + WINDOW]).encode(), digest_size=8).digest()
        for i in range(len(kept) - WINDOW + 1)
    )


def measure_file(path: str, source: str) -> FileMeasure:
    """Lines, function complexities, test functions and duplication windows of one file.
    A file radon cannot parse (Python 2, a syntax error) counts its non-blank lines only."""
    test = is_test(path)
    try:
        lines = analyze(source).sloc
        functions = [b for b in cc_visit(source) if isinstance(b, Function)]
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError) as error:
        log.debug("%s: not measured by radon: %s", path, error)
        lines = sum(1 for line in source.splitlines() if line.strip())
        functions = []
    tests = sum(1 for f in functions if f.name.startswith("test")) if test else 0
    return FileMeasure(
        test=test,
        lines=lines,
        complexities=tuple(f.complexity for f in functions),
        test_count=tests,
        windows=() if test else _windows(source),
    )


def find_ruff() -> str | None:
    """The ruff executable: on the PATH, or installed beside this Python."""
    beside = Path(sys.executable).with_name("ruff")
    return shutil.which("ruff") or (str(beside) if beside.is_file() else None)


class _Blobs:
    """Reads file versions through one long-running ``git cat-file --batch``."""

    def __init__(self, repo: Path) -> None:
        self._process = subprocess.Popen(
            ["git", "-C", str(repo), "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def read(self, blob: str) -> bytes:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(blob.encode() + b"\n")
        self._process.stdin.flush()
        header = self._process.stdout.readline().split()
        if len(header) != 3:
            raise GitError(f"git cat-file could not read blob {blob}: {header!r}")
        data = self._process.stdout.read(int(header[2]))
        self._process.stdout.read(1)  # the newline after the content
        return data

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait()


def _tree(repo: Path, sha: str) -> dict[str, tuple[str, int]]:
    """The Python files of a commit: path -> (blob, size)."""
    out = {}
    for entry in _git(repo, "ls-tree", "-r", "-z", "--long", sha).split("\x00"):
        meta, _, path = entry.partition("\t")
        parts = meta.split()
        if path.endswith(".py") and len(parts) == 4 and parts[1] == "blob":
            size = int(parts[3]) if parts[3].isdigit() else 0
            out[path] = (parts[2], size)
    return out


@dataclass
class _Tree:
    """The measured files of the commit last seen, and the source's duplication windows."""

    files: dict[str, tuple[str, FileMeasure]] = field(default_factory=dict)
    lint: dict[str, int | None] = field(default_factory=dict)
    windows: Counter[bytes] = field(default_factory=Counter)
    duplicated: int = 0

    def _count(self, windows: tuple[bytes, ...], step: int) -> None:
        for w in windows:
            before = self.windows[w]
            after = before + step
            # A window counts as duplicated in every copy while it has two or more.
            self.duplicated += (after if after > 1 else 0) - (before if before > 1 else 0)
            if after:
                self.windows[w] = after
            else:
                del self.windows[w]

    def put(self, path: str, blob: str, measure: FileMeasure) -> None:
        self.remove(path)
        self.files[path] = (blob, measure)
        self._count(measure.windows, +1)

    def remove(self, path: str) -> None:
        old = self.files.pop(path, None)
        if old is not None:
            self._count(old[1].windows, -1)
        self.lint.pop(path, None)


class QualityMeter:
    """Measures the commits of one repository in order, each file version once.

    ``lint``: run ruff for lint warnings (None when ruff is not found).
    """

    def __init__(self, repo: Path, repository: str, lint: bool = True) -> None:
        self.repo = repo
        self.repository = repository
        self.ruff = find_ruff() if lint else None
        self._measures: dict[tuple[str, bool], FileMeasure] = {}
        self._lint: dict[str, int] = {}
        self._tree = _Tree()
        self._blobs = _Blobs(repo)

    def close(self) -> None:
        self._blobs.close()

    def _read(self, blob: str) -> str:
        return self._blobs.read(blob).decode("utf-8", errors="replace")

    def _lint_blobs(self, changed: dict[str, str]) -> None:
        """Lint the file versions not linted yet (``path -> blob``) in one ruff run."""
        todo = {blob: path for path, blob in changed.items() if blob not in self._lint}
        if not todo or self.ruff is None:
            return
        with tempfile.TemporaryDirectory(prefix="foresight-lint-") as folder:
            where = {}
            for i, (blob, path) in enumerate(todo.items()):
                target = Path(folder, str(i), PurePosixPath(path).name)
                target.parent.mkdir()
                target.write_bytes(self._blobs.read(blob))
                where[str(target)] = blob
                self._lint[blob] = 0
            done = subprocess.run(
                [self.ruff, "check", "--isolated", "--exit-zero", "--output-format=json",
                 "--no-cache", *where],
                capture_output=True, text=True, check=False,
                env={**os.environ, "NO_COLOR": "1"},
            )  # fmt: skip
            try:
                found = json.loads(done.stdout or "[]")
            except ValueError:
                log.warning("ruff gave no JSON (%s): lint warnings not counted", done.stderr[:200])
                self.ruff = None
                return
            for item in found:
                linted = where.get(item.get("filename", ""))
                if linted is not None:
                    self._lint[linted] += 1

    def measure(self, commit: Commit) -> Record:
        """The snapshot of ``commit`` (the commits must come oldest first)."""
        tree = self._tree
        files = _tree(self.repo, commit.sha)
        for path in [p for p in tree.files if p not in files]:
            tree.remove(path)
        changed = {}
        for path, (blob, size) in files.items():
            held = tree.files.get(path)
            if held is not None and held[0] == blob:
                continue
            if size > MAX_FILE_BYTES:
                tree.remove(path)
                continue
            key = (blob, is_test(path))
            measure = self._measures.get(key)
            if measure is None:
                measure = self._measures[key] = measure_file(path, self._read(blob))
            tree.put(path, blob, measure)
            changed[path] = blob
        self._lint_blobs(changed)
        return self._snapshot(commit)

    def _snapshot(self, commit: Commit) -> Record:
        measures = [m for _, m in self._tree.files.values()]
        source = [m for m in measures if not m.test]
        tests = [m for m in measures if m.test]
        complexities = [c for m in source for c in m.complexities]
        windows = sum(len(m.windows) for m in source)
        lint = None
        if self.ruff is not None:
            lint = sum(self._lint.get(blob, 0) for blob, _ in self._tree.files.values())
        return {
            "repository": self.repository,
            "commit": commit.sha,
            "event_time": commit.time_ms,
            "files": len(source),
            "lines": sum(m.lines for m in source),
            "functions": len(complexities),
            "mean_complexity": sum(complexities) / len(complexities) if complexities else 0.0,
            "max_complexity": float(max(complexities, default=0)),
            "test_files": len(tests),
            "test_lines": sum(m.lines for m in tests),
            "test_count": sum(m.test_count for m in tests),
            "coverage": None,
            "lint_warnings": lint,
            "duplication": self._tree.duplicated / windows if windows else 0.0,
            "churn_added": commit.added,
            "churn_deleted": commit.deleted,
            "churn_files": commit.files_changed,
            "source": SOURCE,
        }


def repository_name(repo: Path) -> str:
    """The name a repository goes by: its top folder's name."""
    return Path(_git(repo, "rev-parse", "--show-toplevel").strip()).name


Progress = Callable[[int, int, Record], None]


def backfill(
    repo: Path,
    repository: str | None = None,
    ref: str = "HEAD",
    since: str | None = None,
    max_commits: int | None = None,
    lint: bool = True,
    progress: Progress | None = None,
) -> Iterator[Record]:
    """The snapshot of every first-parent commit of ``ref`` (see :func:`history`), oldest
    first; ``progress(done, total, snapshot)`` after each. Raises :class:`GitError` when
    ``repo`` is not a git repository or ``ref`` is unknown: at the call, before any
    snapshot is measured."""
    name = repository or repository_name(repo)
    commits = history(repo, ref, since, max_commits)
    return _measured(repo, name, lint, commits, progress)


def _measured(
    repo: Path, name: str, lint: bool, commits: list[Commit], progress: Progress | None
) -> Iterator[Record]:
    meter = QualityMeter(repo, name, lint)  # its git process starts with the first snapshot
    try:
        for done, commit in enumerate(commits, 1):
            snapshot = meter.measure(commit)
            if progress is not None:
                progress(done, len(commits), snapshot)
            yield snapshot
    finally:
        meter.close()
