"""Reading a run configuration from a TOML, YAML or JSON file (a result file's `config` too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cl_bench.errors import UserError, clip, shown
from cl_bench.results.schema import OLDER_SCHEMAS, READABLE_SCHEMAS, RESOLVED_SCHEMAS, SCHEMA, run_settings
from cl_bench.results.validation import validate

MAX_CONFIG_BYTES = 1 << 20


# Values a configuration may expand to, counting every reference again: YAML aliases can make a
# few hundred bytes stand for billions of values ("billion laughs").
MAX_CONFIG_VALUES = 10_000


def load_config_file(path: str) -> dict[str, Any]:
    """Read a TOML, YAML or JSON run configuration (a result file's `config` section works too)."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"config file '{path}' not found")
    if file.stat().st_size > MAX_CONFIG_BYTES:
        raise UserError(f"config file '{path}' is over {MAX_CONFIG_BYTES >> 20} MiB; a run configuration is a few lines")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"config file '{path}' is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    suffix = file.suffix.lower()
    try:
        if suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise UserError(f"config file '{path}': use a .toml, .yaml or .json file")
    except UserError:
        raise
    except Exception as exc:  # parse errors of three libraries, nesting too deep (RecursionError)
        raise UserError(f"config file '{path}' cannot be parsed: {clip(str(exc) or type(exc).__name__)}") from None
    if _expanded_size(data, MAX_CONFIG_VALUES) > MAX_CONFIG_VALUES:
        raise UserError(f"config file '{path}' expands to over {MAX_CONFIG_VALUES} values (YAML aliases?); write the settings out plainly")
    if not isinstance(data, dict):
        raise UserError(f"config file '{path}' must hold a table of settings")
    if "schema" in data:
        if data["schema"] in RESOLVED_SCHEMAS:  # a result file: repeat its run with the values it resolved
            validate(data, str(path))
            return run_settings(data)
        if data["schema"] not in (*READABLE_SCHEMAS, *OLDER_SCHEMAS) or not isinstance(data.get("config"), dict):
            raise UserError(f"config file '{path}' is a {shown(data['schema'])} document, neither a run configuration nor a {SCHEMA} result file")
        data = data["config"]  # an older result file: repeat its configuration as given
    return data


def _expanded_size(data: Any, cap: int) -> int:
    """How many values `data` holds, counting shared ones each time; stops counting past `cap`."""
    count, pending = 0, [data]
    while pending and count <= cap:
        value = pending.pop()
        count += 1
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, (list, tuple)):
            pending.extend(value)
    return count


def repeated_run_id(path: str) -> str | None:
    """The run id of the result file `path` (None for a plain configuration): what a repeat of it
    should resolve to."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8")) if Path(path).suffix.lower() == ".json" else None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return data["run_id"] if isinstance(data, dict) and "schema" in data and isinstance(data.get("run_id"), str) else None
