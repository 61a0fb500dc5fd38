"""Development secrets: made on first use in a 0600 file when the environment gives none.

Fine on a laptop; in production every secret comes from the environment (or a KMS), and
these files never exist. One place makes them so that every secret gets the same care:
created with O_EXCL (never over an existing file), mode 0600 from the first byte, 32
random bytes from the OS CSPRNG, and a warning that names the file, never the value.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

__all__ = ["dev_secret_file"]

log = logging.getLogger(__name__)

SECRET_BYTES = 32


def dev_secret_file(path: Path, what: str) -> str:
    """The hex secret in `path`, created first (0600) when missing; `what` names it in the log."""
    path = Path(path)
    if not path.exists():
        log.warning("no %s in the environment: generating one in %s (development only)", what, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it between the check and the open: use theirs
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(SECRET_BYTES))
    return path.read_text().strip()
