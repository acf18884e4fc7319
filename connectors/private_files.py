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


def write_private(path: Path, content: str | bytes, *, replace: bool = True) -> bool:
    """Write ``content`` to ``path`` readable by its owner only (mode 0600); the file appears
    whole or not at all. With ``replace=False``, only when ``path`` does not exist yet: of two
    processes making it at once, one wins and the other keeps its file. True when written.

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "secret"
    >>> write_private(target, "s3cret\\n"), write_private(target, "other", replace=False)
    (True, False)
    >>> oct(target.stat().st_mode & 0o777), target.read_text()
    ('0o600', 's3cret\\n')
    """
    if not replace and path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(content.encode() if isinstance(content, str) else content)
        if replace:
            os.replace(draft, path)
        else:
            os.link(draft, path)  # fails if the file appeared meanwhile
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(draft)
    return True
