"""Config validation with one-line errors that name the key and what is allowed."""
from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml

from .errors import UserError


class ConfigError(UserError, ValueError):
    pass


def _where(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "config"


def _explain(err: jsonschema.ValidationError) -> str:
    key = _where(err.absolute_path)
    s = err.schema
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(s.get("properties", {})))
        return (f"{_where(list(err.absolute_path) + [extra[0]]) if extra else key}: unknown key; "
                f"allowed keys: {', '.join(s.get('properties', {}))}")
    if err.validator == "enum":
        return f"{key}: {err.instance!r} is not allowed; choose one of: {', '.join(map(str, s['enum']))}"
    if err.validator == "type":
        return f"{key}: {err.instance!r} is not of type {s['type']}"
    if err.validator in ("minimum", "maximum"):
        bound = "at least" if err.validator == "minimum" else "at most"
        return f"{key}: {err.instance!r} is out of range; it must be {bound} {s[err.validator]}"
    if err.validator == "uniqueItems":
        return f"{key}: {err.instance!r} has repeated values; list each once"
    if err.validator == "minItems":
        return f"{key}: is empty; give at least {s['minItems']} value"
    if err.validator == "pattern":
        return f"{key}: {err.instance!r} does not match {s['pattern']}"
    return f"{key}: {err.message}"


def check(config: dict, schema_path: str | Path) -> None:
    """Raise ConfigError with one line naming the first problem; then fill in the schema's defaults."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config),
                    key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise ConfigError(_explain(errors[0]))
    from snakemake.utils import validate  # fills in the schema's defaults

    validate(config, str(schema_path))
    n = config["n_images"]
    too_big = [c for c in config["cutoffs"] if c > n]
    if too_big:
        raise ConfigError(f"cutoffs: {too_big[0]} is larger than n_images ({n}); "
                          f"lower the cutoff or raise n_images")
