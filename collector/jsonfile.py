"""The collector's JSON settings files (--stages, --slos, --alerts): reading them, and
the one error type their checks raise, naming the file and the entry at fault.

Standard library only: the configuration module imports this while it builds the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class FileConfigError(ValueError):
    """A settings file that cannot be used; the message says which file and what."""


def read_json(path: Path, what: str, error: type[FileConfigError] = FileConfigError) -> Any:
    """The parsed contents of `path`, or `error` saying why not ("stage rules
    /etc/x.json is not JSON: ...")."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise error(f"cannot read {what} {path}: {err.strerror or err}") from None
    except (UnicodeDecodeError, ValueError) as err:
        raise error(f"{what} {path} is not JSON: {err}") from None
