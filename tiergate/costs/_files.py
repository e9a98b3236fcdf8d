"""Reading the YAML inputs of the cost tools (price books, TCO scenarios, advisor profiles) with errors that
name the file and the bad key, in the same words as tiergate.yaml errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from tiergate.config import format_validation_error
from tiergate.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def read_yaml_mapping(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """The top-level mapping of a YAML file; ConfigError when missing, unparsable or not a mapping."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: {what} file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read {what} file ({exc})") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level of a {what} file must be a mapping")
    return data


def validate(model: type[M], data: dict[str, Any], source: str) -> M:
    """`model.model_validate(data)` with pydantic errors turned into one ConfigError naming each bad key."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from exc
