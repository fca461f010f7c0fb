"""Secrets: read when they are used, from the environment variable that configuration names.

Every secret the project uses is named, never held, by its configuration (the supplier registry's
`*_env` keys, the resources' `*_env` fields) and read here at the moment of use: from `NAME`, else from
the file that `NAME_FILE` points at (a mounted Kubernetes or Docker secret). A rotated secret is picked
up by the next request or run without a reload, and an error names the variable, never a value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

FILE_SUFFIX = "_FILE"


class SecretFileError(OSError):
    """The file a `NAME_FILE` variable points at cannot be read (the message names the variable)."""


def read_secret(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The secret `name` from $NAME, else from the file $NAME_FILE names; None when neither is set."""
    env = os.environ if environ is None else environ
    value = env.get(name)
    if value:
        return value
    path = env.get(name + FILE_SUFFIX)
    if not path:
        return None
    try:
        # A mounted secret file usually ends with a newline that is not part of the secret.
        text = Path(path).read_text().rstrip("\r\n")
    except OSError as exc:
        raise SecretFileError(f"{name}{FILE_SUFFIX}: cannot read the secret file ({exc.strerror})") from None
    return text or None
