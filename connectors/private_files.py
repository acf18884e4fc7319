"""Files and folders only their owner can read: keys, credentials, secrets, private keys.

A secret is written to a temporary file created with mode 0600 and then renamed over its
path, so it is never readable by others, not even for a moment, and readers see the old file
or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def private_folder(path: Path) -> Path:
    """``path``, created when missing, readable by its owner only (0700)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private(path: Path, content: str | bytes) -> None:
    """Write ``content`` to ``path`` readable by its owner only (mode 0600), atomically.

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "secret"
    >>> write_private(target, "s3cret\\n")
    >>> oct(target.stat().st_mode & 0o777), target.read_text()
    ('0o600', 's3cret\\n')
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(content.encode() if isinstance(content, str) else content)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
