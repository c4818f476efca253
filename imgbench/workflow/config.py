"""Config validation with one-line errors that name the key and what is allowed."""
from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import yaml

from ..errors import UserError


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
    if err.validator in ("exclusiveMinimum", "exclusiveMaximum"):
        bound = "more than" if err.validator == "exclusiveMinimum" else "less than"
        return f"{key}: {err.instance!r} is out of range; it must be {bound} {s[err.validator]}"
    if err.validator == "uniqueItems":
        return f"{key}: {err.instance!r} has repeated values; list each once"
    if err.validator == "minItems":
        return f"{key}: is empty; give at least {s['minItems']} value"
    if err.validator == "pattern":
        if "x-names" in s:  # a name with an optional suffix: say which names there are
            return f"{key}: {err.instance!r} is not a {s['x-names']}"
        return f"{key}: {err.instance!r} does not match {s['pattern']}"
    return f"{key}: {err.message}"


def _coerce(value, schema: dict):
    """`value` with the strings the schema wants as numbers, booleans or null turned into them.

    Snakemake reads a list or mapping given with --config as YAML of strings only
    (`"cutoffs=[100,5000]"` gives ["100", "5000"]), so numbers in them arrive as text."""
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if isinstance(value, str):
        text = value.strip()
        if "integer" in types and re.fullmatch(r"[+-]?\d+", text):
            return int(text)
        if "number" in types:
            try:
                return float(text)
            except ValueError:
                pass
        if "boolean" in types and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if "null" in types and text.lower() in ("null", "~", "none"):
            return None
        return value
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_coerce(v, schema["items"]) for v in value]
    if isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        return {k: _coerce(v, props.get(k, extra if isinstance(extra, dict) else {})) for k, v in value.items()}
    return value


def check(config: dict, schema_path: str | Path) -> None:
    """Raise ConfigError with one line naming the first problem; then fill in the schema's defaults."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    config.update(_coerce(dict(config), schema))
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
    if config["dataset"] == "folder":
        path = config["folder"]["path"]
        if not path:
            raise ConfigError("folder.path: not set; dataset folder needs folder.path, a directory of images")
        if not Path(path).is_dir():
            raise ConfigError(f"folder.path: {path} is not a directory; set it to a directory of images")
        # filled in like the schema's defaults: the report's landing page finds results/folder-NAME
        config["folder"]["name"] = dataset_name(config).removeprefix("folder-")
    _check_variants(config)
    for name, cap in config["max_n"].items():
        if cap is not None and cap < min(config["cutoffs"]):
            raise ConfigError(f"max_n.{name}: {cap} is below the smallest cutoff ({min(config['cutoffs'])}), "
                              f"so {name} would store nothing; raise it, or leave {name} out of backends")


def cutoffs_of(config: dict, label: str) -> list[int]:
    """The cutoffs a backend (label: name or name.encoding) stores and reads at: max_n caps them."""
    cap = config["max_n"].get(label.partition(".")[0])
    return [n for n in config["cutoffs"] if cap is None or n <= cap]


FOLDER_DATASETS = ("sample-folder", "folder")


def dataset_name(config: dict) -> str:
    """The name of the data and results directories: the dataset, or folder-NAME for a folder."""
    if config["dataset"] != "folder":
        return config["dataset"]
    name = config["folder"]["name"] or Path(config["folder"]["path"]).resolve().name
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError(f"folder.name: the folder's name {name!r} cannot name a results directory; "
                          "set folder.name to letters, digits, '_', '.' or '-'")
    return f"folder-{name}"


def _check_variants(config: dict) -> None:
    """Every backend label names an encoding its backend offers, and source only for folders."""
    from ..backends import variant

    folder = config["dataset"] in FOLDER_DATASETS
    for label in config["backends"]:
        name = label.partition(".")[0]
        try:
            b = variant(label, **(config["backend_options"].get(name) or {}))
        except ValueError as e:
            raise ConfigError(f"backends: {e}") from None
        if b.encoding == "source" and not folder:
            raise ConfigError(f"backends: {label} stores the original image files, which only folder datasets "
                              "have (dataset: folder or sample-folder); choose raw, png or jpeg")


def left_out(config: dict) -> dict[str, str]:
    """The configured backends that cannot run here, each with why in a few words: those whose
    library is an optional extra not installed (LitData, which pulls in PyTorch), and, for a
    folder of images, the ones that store images of one shape only (the article's three), whose
    photographs may differ in shape. The rest of the run goes on without them."""
    from ..backends import split
    from ..backends.lookup import backend_class

    absent, one_shape = {}, {}
    for label in config["backends"]:
        cls = backend_class(split(label)[0])
        missing = cls.missing()
        if missing:
            absent[label] = f"its library {missing} is not installed (pip install 'imgbench[{cls.EXTRA}]')"
        elif config["dataset"] in FOLDER_DATASETS and not cls.RAGGED:
            one_shape[label] = ("it takes images of one shape only, and a folder's may differ; use "
                                + split(label)[0].removeprefix('article-'))
    if one_shape and len(one_shape) == len(config["backends"]):
        raise ConfigError(f"backends: {', '.join(one_shape)} store only images of one shape, and a folder's images "
                          f"may differ: none is left to run; choose others (e.g. "
                          f"{', '.join(dict.fromkeys(split(b)[0].removeprefix('article-') for b in one_shape))})")
    out = {**absent, **one_shape}
    if out and len(out) == len(config["backends"]):
        raise ConfigError(f"backends: none of {', '.join(out)} can run here ({next(iter(out.values()))}); choose "
                          "others")
    return out


def storage_tiers(config: dict, where=".") -> tuple[list, dict[str, str]]:
    """The storage tiers this run reads its largest stores in (local is every other experiment:
    not a tier job of its own), and the emulated ones it leaves out, each with why: this machine
    cannot emulate (not root, no controllers) or `where` (the results' file system) has no block
    device to limit. Bad tiers and path tiers without their directory raise ConfigError;
    storage.backends and storage.clients choose among the run's own."""
    from ..bench import tiers

    st = config["storage"]
    try:
        parsed = tiers.parse_all(st["tiers"])
    except tiers.TierError as e:
        raise ConfigError(f"storage.tiers: {e}") from None
    for t in parsed:
        if t.path is not None and not Path(t.path).is_dir():
            raise ConfigError(f"storage.tiers: tier {t.name!r}: path {t.path} is not a directory; create it or "
                              "point path at a directory on the file system to measure")
    run = [t for t in parsed if not t.local]
    emulated = [t for t in run if t.emulated]
    if not emulated:
        return run, {}
    why = tiers.why_not_emulated()
    if why is None and any(t.read_mib_s or t.read_iops for t in emulated) and tiers.block_device(where) is None:
        why = (f"the results' file system ({tiers.mount_of(where)['tier_fs']}) has no block device to limit; "
               "run from a directory on a disk, or use path: tiers")
    if why is None:
        return run, {}
    return [t for t in run if not t.emulated], {f"tier {t.name}": why for t in emulated}
