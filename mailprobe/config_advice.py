"""What to tell a person about their configuration, in sentences they would write themselves.

pydantic reports `connectors.drop.csv.schedule: Value error, …` or "Input should be a valid
integer, unable to parse string as an integer"; `describe()` turns its first problem into
"connectors.drop.schedule: must be a whole number (got 'abc', from MAILPROBE_…)" and a connector
known only from the environment into the entry to add to the file. `secret_warnings()` flags
tokens and keys written into the YAML file. Messages never carry a secret: values are echoed
only for settings that cannot hold one, and the whole line goes through the log mask.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from .logs import SecretMask

ENV_PREFIX = "MAILPROBE_"
CONNECTOR_TYPES = ("csv", "hubspot", "sendgrid")
#: Settings a connector of each type has and the others lack: a guess at the type intended.
_TYPE_HINTS = {
    "access_token": "hubspot",
    "backfill": "hubspot",
    "requests_per_10s": "hubspot",
    "api_key": "sendgrid",
    "lists": "sendgrid",
    "invalid_list": "sendgrid",
    "folder": "csv",
    "settle_s": "csv",
    "email_column": "csv",
}
#: pydantic's names for the branches of a union (`backfill: bool | date` → "bool", "date").
_BRANCHES = frozenset({"bool", "date", "datetime", "int", "float", "str", "list", "dict", "none"})
_SECRET_NAME = re.compile(r"(?i)token|key|secret|password|passwd")

#: What a value of each kind looks like, for "must be …".
_KINDS: dict[str, str] = {
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "date_parsing": "a date (YYYY-MM-DD)",
    "date_type": "a date (YYYY-MM-DD)",
    "date_from_datetime_parsing": "a date (YYYY-MM-DD)",
    "date_from_datetime_inexact": "a date (YYYY-MM-DD)",
    "datetime_parsing": "a time (2026-11-27T12:00:00Z)",
    "datetime_type": "a time (2026-11-27T12:00:00Z)",
    "string_type": "text",
    "list_type": 'a list ([a, b] in YAML; JSON such as \'["a", "b"]\' in the environment)',
    "dict_type": "a mapping of settings",
    "model_type": "a mapping of settings",
    "model_attributes_type": "a mapping of settings",
    "ip_v4_network": "a network in CIDR form (10.0.0.0/8 or fd00::/8)",
    "ip_v6_network": "a network in CIDR form (10.0.0.0/8 or fd00::/8)",
    "ip_v4_address": "an IP address",
    "ip_v6_address": "an IP address",
    "ip_any_address": "an IP address",
    "url_parsing": "a URL (https://…)",
    "url_type": "a URL (https://…)",
    "url_scheme": "a URL (https://…)",
}
_BOUNDS = {
    "greater_than": ("gt", "more than"),
    "greater_than_equal": ("ge", "at least"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "at most"),
}


def describe(error: ValidationError, *, path: Path | None, data: Any) -> str:
    """Return one line for the first problem of `error`: the setting, what is wrong, where from.

    `path` is the YAML file read (None without one) and `data` what it held, so a connector
    set only through the environment can be told apart from one missing its type.
    """
    errors = error.errors()
    where = _where(errors[0]["loc"])
    same = [e for e in errors if _where(e["loc"]) == where]
    problem, value = _problem(same, path=path, data=data)
    notes = [f"got {value}" if value else "", _origin(errors[0]["loc"], path)]
    if errors[0]["type"].startswith("union_tag"):
        notes = []  # the message names the file already
    shown = "; ".join(note for note in notes if note)
    others = len({_where(e["loc"]) for e in errors}) - 1
    tail = f"; and {others} more problem{'s' if others > 1 else ''}" if others else ""
    return f"{where}: {problem}{f' ({shown})' if shown else ''}{tail}"


def _where(loc: Sequence[int | str]) -> str:
    """Return a setting's dotted name, without pydantic's union branches and connector tags."""
    parts: list[str] = []
    for index, part in enumerate(loc):
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
            continue
        if "[" in part or (part in _BRANCHES and index == len(loc) - 1 and index > 0):
            continue
        if index == 2 and loc[0] == "connectors" and part in CONNECTOR_TYPES:
            continue
        parts.append(part)
    return ".".join(parts) or "(top level)"


def _problem(
    errors: Sequence[Mapping[str, Any]], *, path: Path | None, data: Any
) -> tuple[str, str | None]:
    """Return what is wrong, and the value given when it is safe to show it."""
    first = errors[0]
    kind = first["type"]
    if kind in ("union_tag_not_found", "union_tag_invalid"):
        return _connector_type(first, path=path, data=data), None
    kinds = list(dict.fromkeys(_KINDS[e["type"]] for e in errors if e["type"] in _KINDS))
    if kinds:
        return f"must be {', or '.join(kinds)}", _shown_value(first)
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return f"must be {words} {first.get('ctx', {}).get(key)}", _shown_value(first)
    if kind == "extra_forbidden":
        return "unknown setting (check the spelling against config.example.yaml)", None
    if kind == "missing":
        return "is required", None
    if kind in ("literal_error", "enum"):
        return f"must be {first.get('ctx', {}).get('expected', '')}", _shown_value(first)
    return _plain(first["msg"]), None


def _plain(message: str) -> str:
    """Return pydantic's message without its prefixes ("Value error, ", "Input should be")."""
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    message = re.sub(r"^Input should be\b", "must be", message)
    return re.sub(r"^Input is not\b", "is not", message)


def _shown_value(error: Mapping[str, Any]) -> str | None:
    """Return a short plain value as given, unless its setting could hold a secret."""
    value = error.get("input")
    names = [str(part) for part in error["loc"]]
    if any(_SECRET_NAME.search(name) for name in names):
        return None
    if isinstance(value, str | int | float | bool) and len(repr(value)) <= 60:
        return SecretMask()(repr(value))  # a password inside a URL, say
    return None


def _connector_type(error: Mapping[str, Any], *, path: Path | None, data: Any) -> str:
    """Return what to add for a connector without a valid `type`."""
    name = str(error["loc"][1]) if len(error["loc"]) > 1 else "NAME"
    tag = error.get("ctx", {}).get("tag")
    if error["type"] == "union_tag_invalid" and tag is not None:
        return f"type {str(tag)!r} is not a connector type; use csv, hubspot or sendgrid"
    guess = _guess_type(name, error.get("input"))
    wanted = f"`type: {guess}`" if guess else "a type (`type: csv`, `hubspot` or `sendgrid`)"
    file = path.name if path is not None else "mailprobe.yaml"
    if not _in_file(data, name):
        made = " (`mailprobe init` writes one)" if path is None else ""
        return (
            f"the environment sets {ENV_PREFIX}CONNECTORS__{name.upper()}__… but {file}{made} "
            f"has no such connector; add a `{name}:` entry with {wanted} under `connectors:` "
            f"in {file}"
        )
    return f"needs {wanted} in {file}"


def _guess_type(name: str, given: Any) -> str | None:
    if name in CONNECTOR_TYPES:
        return name
    keys = given.keys() if isinstance(given, Mapping) else ()
    guesses = {_TYPE_HINTS[key] for key in keys if key in _TYPE_HINTS}
    return guesses.pop() if len(guesses) == 1 else None


def _in_file(data: Any, name: str) -> bool:
    connectors = data.get("connectors") if isinstance(data, Mapping) else None
    return isinstance(connectors, Mapping) and name in connectors


def _origin(loc: Sequence[int | str], path: Path | None) -> str:
    """Return where the bad value came from: the environment variable that set it, or the file."""
    names = [str(part).upper() for part in loc if isinstance(part, str) and "[" not in part]
    environ = {key.upper() for key in os.environ}
    for end in range(len(names), 0, -1):
        variable = ENV_PREFIX + "__".join(names[:end])
        if variable in environ:
            return f"from {variable}"
    return f"in {path}" if path is not None else ""


# -- secrets written into the file ------------------------------------------------------------


def file_secret_warnings(path: Path | None, settings: BaseModel) -> list[str]:
    """Return secret_warnings() for the config file settings were loaded from (if any)."""
    from .settings import config_file

    path = config_file(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path is not None else None
    except (OSError, yaml.YAMLError):
        return []  # loading it worked a moment ago; a file changing now is not ours to judge
    return secret_warnings(path, data, settings)


def secret_warnings(path: Path | None, data: Any, settings: BaseModel) -> list[str]:
    """Return a warning per secret the YAML file holds (tokens, keys): the environment is safer."""
    if path is None or not isinstance(data, Mapping):
        return []
    return [
        f"warning: {path} holds the secret {name}; anyone who can read the file can use it. "
        f"Set {_variable(name)} in the environment instead and remove it from the file."
        for name in _secret_paths(data, settings, "")
    ]


def _variable(dotted: str) -> str:
    return ENV_PREFIX + "__".join(part.upper() for part in dotted.split("."))


def _secret_paths(data: Any, value: Any, prefix: str) -> Iterator[str]:
    """Yield the dotted names of secret settings that `data` (the YAML) gives a value."""
    if _is_secret(value):
        if data not in (None, "", [], {}):
            yield prefix
        return
    if not isinstance(data, Mapping):
        return
    if isinstance(value, BaseModel):
        children = {name: getattr(value, name) for name in type(value).model_fields}
    elif isinstance(value, Mapping):
        children = dict(value)
    else:
        return
    for key, child in children.items():
        if key in data:
            yield from _secret_paths(data[key], child, f"{prefix}.{key}".lstrip("."))


def _is_secret(value: Any) -> bool:
    if isinstance(value, SecretStr):
        return True
    return isinstance(value, list) and bool(value) and all(isinstance(v, SecretStr) for v in value)
