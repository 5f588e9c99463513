"""The session secret a single node keeps for itself when the config sets none.

Sessions are on by default: a single process (one worker, the in-process bus) generates
a secret once and keeps it in its cache directory (mode 0600), so session cookies stay
valid across restarts. Several workers or nodes must share one secret; the config loader
requires ``session.secret`` then.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
from pathlib import Path

from weaver.config.schema import Config

log = logging.getLogger(__name__)

FILE_NAME = "session.secret"


def secret_path(config: Config) -> Path:
    return Path(config.cache.dir) / FILE_NAME


def with_session_secret(config: Config) -> Config:
    """``config`` with ``session.secret`` set: the configured one, else this node's own
    (read from, or created in, ``<cache.dir>/session.secret``). Blocking file I/O: call
    before serving.

    Raises:
        OSError: the file cannot be read or created.
    """
    if config.session.secret:
        return config
    path = secret_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_text(encoding="ascii").strip()
    else:
        secret = secrets.token_hex(32)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secret + "\n")
        log.info("session.secret is not set: generated one in %s (this node only)", path)
    if len(secret) < 32:
        raise OSError(f"{path} holds no usable secret (delete it to generate a new one)")
    session = dataclasses.replace(config.session, secret=secret)
    return dataclasses.replace(config, session=session)
