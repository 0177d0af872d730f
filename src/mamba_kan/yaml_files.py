"""Reading YAML settings files, without torch: shared by training configs (``train --config``) and experiment
files (``compare --config``, the packaged presets), so that both read numbers, errors and file kinds the same way
and the command line's parsers (which list the presets) stay fast to import."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mamba_kan.errors import UserError

#: Top-level keys of an experiment file (mamba_kan.experiments.spec); none of them is a training setting, so a
#: file holding any of them is an experiment file, not training settings.
# libyaml's loader when PyYAML has it (the same safe subset, ~10x faster), else the pure-Python one
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
EXPERIMENT_FILE_KEYS = ("name", "description", "models", "tasks", "seeds", "settings", "sweep")


def looks_like_float(text: str) -> bool:
    """Whether ``text`` is a finite number in any notation Python reads (``1e-3``, which YAML 1.1 leaves a
    string because it has no dot)."""
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in {"nan", "inf", "-inf", "+inf", "infinity", "-infinity"}


def fix_yaml_floats(value: Any) -> Any:
    """``value`` with every string that :func:`looks_like_float` turned into a float, inside lists and maps."""
    if isinstance(value, dict):
        return {k: fix_yaml_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [fix_yaml_floats(v) for v in value]
    if isinstance(value, str) and looks_like_float(value):
        return float(value)
    return value


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """The mapping in YAML file ``path`` (an empty file is {}). Unreadable, non-UTF-8 or invalid files and
    documents that are not a mapping with string keys are a one-line UserError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"config file {path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise UserError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.load(text, Loader=_SAFE_LOADER)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "parse error"
        raise UserError(f"config file {path} is not valid YAML: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of settings, got {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise UserError(f"config file {path}: keys must be strings, got {bad[0]!r}")
    return fix_yaml_floats(data)


def is_experiment_mapping(data: Mapping[str, Any]) -> bool:
    """Whether a YAML mapping is an experiment file (it has one of :data:`EXPERIMENT_FILE_KEYS`)."""
    return any(k in data for k in EXPERIMENT_FILE_KEYS)
