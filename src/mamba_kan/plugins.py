"""Plug-ins: feedforward blocks, sequence mixers and task families added from outside ``mamba_kan``.

Three registration functions, one per kind (the contracts are in ``docs/plugins.md``):

* :func:`register_ffn` (``name, builder``): ``builder(d_model, hidden, cfg) -> nn.Module`` mapping
  (B, L, d_model) -> (B, L, d_model), with ``scale_residual_(factor)`` and ``flops_per_token(flop_count)``.
  Its hidden width is solved by the parameter (or FLOP) matcher exactly as for the built-in blocks, so a plug-in
  FFN gets the same budget as the MLP of its mixer (see :mod:`mamba_kan.models.matching`).
* :func:`register_mixer` (``name, builder``): ``builder(cfg) -> nn.Module`` mapping (B, L, d_model) ->
  (B, L, d_model) causally, with ``scale_residual_(factor)`` and ``flops_per_token(seq_len)``.
* :func:`register_family` (a :class:`~mamba_kan.tasks.registry.FamilyInfo`): a task family.

Variant names are built from the registries: every feedforward block x every mixer, ``{ffn}_{mixer}`` (the
``none`` mixer is spelled ``ffn``), so after ``register_ffn("glu", ...)`` the names ``glu_transformer``,
``glu_mamba`` and ``glu_ffn`` exist. The 2x3 design, its D1/D2 contrasts and the design vocabulary
(:mod:`mamba_kan.design`) stay the built-in levels; plug-in variants are further models beside them.

Loading, once, the first time a registry is consulted: every entry point of the group ``mamba_kan.plugins``
(``[project.entry-points."mamba_kan.plugins"]`` in a package's pyproject; the entry point is a module, imported,
or a callable, called with no arguments) and every module named in ``MAMBA_KAN_PLUGINS`` (comma-separated). The
CLI's ``--plugin MODULE`` loads a module and adds it to ``MAMBA_KAN_PLUGINS``, so worker processes of any backend
load the same plug-ins (a cell's job also carries the list, for hosts that do not inherit the environment).

Cache keys: :func:`mamba_kan.experiments.grid.code_version` hashes only ``mamba_kan``'s own files, so installing
a plug-in keeps every cached cell valid. Each registration records a digest of its plug-in's source files
(:class:`PluginSource`); :func:`cell_source_hash` folds the digests of the plug-in components a cell uses into
that cell's key only, so editing a plug-in re-runs exactly the cells that use it.

This module imports neither torch nor the task package at import time.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from mamba_kan.design import ALL_MIXERS, ALL_VARIANTS, FFN_LEVELS
from mamba_kan.design import try_parse_variant as _builtin_parse
from mamba_kan.errors import UserError

#: the entry-point group a package declares its plug-in under
ENTRY_POINT_GROUP = "mamba_kan.plugins"
#: comma-separated plug-in modules every mamba-kan process loads (set by ``--plugin``; read by workers)
PLUGINS_ENV = "MAMBA_KAN_PLUGINS"

# a plug-in FFN or mixer name: lower-case letters and digits, so ``{ffn}_{mixer}`` splits at its one underscore
_COMPONENT_NAME = re.compile(r"^[a-z][a-z0-9]*$")
# a task family name: no '/' (family/config) and no '@' (task labels with options)
_FAMILY_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PACKAGE_ROOT = Path(__file__).resolve().parent
_RESERVED_MIXER_NAMES = frozenset({"ffn", "none"})  # "ffn" spells the none mixer in variant names


@dataclass(frozen=True)
class PluginSource:
    """Where a registered component came from: the registering ``module`` and a ``digest`` (16 hex digits of
    sha256) of its source files (``files``, paths relative to the directory holding the top-level package)."""

    module: str
    digest: str
    files: tuple[str, ...]


@dataclass(frozen=True)
class FFNPlugin:
    """A registered feedforward block: ``builder(d_model, hidden, cfg) -> nn.Module``."""

    name: str
    builder: Callable[..., Any]
    description: str
    source: PluginSource


@dataclass(frozen=True)
class MixerPlugin:
    """A registered sequence mixer: ``builder(cfg) -> nn.Module``."""

    name: str
    builder: Callable[..., Any]
    description: str
    source: PluginSource


FFNS: dict[str, FFNPlugin] = {}
MIXERS: dict[str, MixerPlugin] = {}
#: family name -> source, for families registered from outside mamba_kan (built-in families have none)
FAMILY_SOURCES: dict[str, PluginSource] = {}

_loading = False  # entry points and MAMBA_KAN_PLUGINS are being (or have been) loaded
_loaded = False
_modules: list[str] = []  # modules loaded by name, in order


# --- sources and their digests -----------------------------------------------------------------------------------
def _caller_module() -> str:
    """The module that called a register_* function (the first frame outside this module and the task registry)."""
    frame = sys._getframe(1)
    skip = {__name__, "mamba_kan.tasks.registry"}
    while frame is not None and frame.f_globals.get("__name__") in skip:
        frame = frame.f_back
    return str(frame.f_globals.get("__name__", "__main__")) if frame is not None else "__main__"


def _is_core(path: Path) -> bool:
    return path == _PACKAGE_ROOT or _PACKAGE_ROOT in path.parents


def _module_files(module_name: str) -> list[tuple[str, Path]]:
    """(stable name, path) of the source files of ``module_name``'s top-level package (every ``*.py`` under it),
    or of the module's own file when it is not part of a package."""
    top = module_name.split(".", 1)[0]
    mod = sys.modules.get(top) or sys.modules.get(module_name)
    if mod is None:
        return []
    paths = [Path(p) for p in getattr(mod, "__path__", [])]
    out: list[tuple[str, Path]] = []
    if paths:  # a package: all of its Python files, named relative to the directory that holds it
        for root in paths:
            for f in sorted(root.rglob("*.py")):
                if "__pycache__" not in f.parts:
                    out.append(((Path(top) / f.relative_to(root)).as_posix(), f))
    elif getattr(mod, "__file__", None):
        f = Path(mod.__file__)
        out.append((f.name, f))
    return out


def _source(module_name: str, obj: object) -> PluginSource:
    """The :class:`PluginSource` of a component registered by ``module_name`` whose builder is ``obj``: the
    registering module's package plus the file defining ``obj`` (if elsewhere), mamba_kan's own files excluded
    (they are covered by the code version)."""
    files = dict(_module_files(module_name))
    defined_in = sys.modules.get(getattr(obj, "__module__", "") or "")
    defining_file = getattr(defined_in, "__file__", None)
    if defining_file:
        f = Path(defining_file)
        if f.resolve() not in {p.resolve() for p in files.values()}:
            files.setdefault(f.name, f)
    digest = hashlib.sha256()
    kept = []
    for name in sorted(files):
        path = files[name]
        if _is_core(path.resolve()):
            continue
        try:
            content = path.read_bytes()
        except OSError:
            continue
        kept.append(name)
        digest.update(name.encode() + b"\0" + content + b"\0")
    if not kept:  # defined interactively: the qualified name is all there is to key on
        digest.update(f"{module_name}:{getattr(obj, '__qualname__', repr(obj))}".encode())
    return PluginSource(module_name, digest.hexdigest()[:16], tuple(kept))


# --- registration ------------------------------------------------------------------------------------------------
def _check_component_name(kind: str, name: object, taken: Iterable[str]) -> str:
    if not isinstance(name, str) or not _COMPONENT_NAME.match(name):
        raise UserError(
            f"plug-in {kind} name {name!r} must be lower-case letters and digits, starting with a letter "
            f"(variant names are '{{ffn}}_{{mixer}}')"
        )
    if name in taken:
        raise UserError(f"plug-in {kind} name {name!r} is a built-in {kind}; choose another name")
    return name


def _check_unique(kind: str, name: str, registry: dict[str, Any], module: str) -> None:
    old = registry.get(name)
    if old is not None and old.source.module != module:
        raise UserError(
            f"plug-in {kind} {name!r} is registered twice: by {old.source.module} and by {module}"
        )


def register_ffn(name: str, builder: Callable[..., Any], *, description: str = "") -> FFNPlugin:
    """Register a feedforward block ``name`` (lower-case letters and digits) built by
    ``builder(d_model: int, hidden: int, cfg: ModelConfig) -> nn.Module``.

    The module maps (B, L, d_model) -> (B, L, d_model), position-wise, and defines ``scale_residual_(factor)``
    (scale its output projection in place: the GPT-2 residual scaling every block gets at init) and
    ``flops_per_token(flop_count: str) -> int``. Its parameter count (or FLOPs/token) must be affine in
    ``hidden``: the matcher solves ``hidden`` so that the block has the parameters of the reference MLP, as it
    does for the built-in blocks, and refuses a block whose size does not grow linearly with it. Registering the
    same name again from the same module replaces the entry (a reload); from another module it is an error.
    """
    name = _check_component_name("feedforward block", name, FFN_LEVELS)
    if not callable(builder):
        raise UserError(f"plug-in feedforward block {name!r}: builder must be callable")
    module = _caller_module()
    _check_unique("feedforward block", name, FFNS, module)
    entry = FFNPlugin(name, builder, description, _source(module, builder))
    FFNS[name] = entry
    return entry


def register_mixer(name: str, builder: Callable[..., Any], *, description: str = "") -> MixerPlugin:
    """Register a sequence mixer ``name`` (lower-case letters and digits; not ``ffn``/``none``) built by
    ``builder(cfg: ModelConfig) -> nn.Module``.

    The module maps (B, L, d_model) -> (B, L, d_model) causally (position t sees positions <= t only) and defines
    ``scale_residual_(factor)`` and ``flops_per_token(seq_len: int) -> int``. Mixers are not parameter-matched
    (the built-in mixers keep their standard sizes too); under ``match_scope='mixer'`` each plug-in mixer's
    variants are matched to its own ``mlp_<mixer>`` variant.
    """
    name = _check_component_name("mixer", name, tuple(ALL_MIXERS) + tuple(_RESERVED_MIXER_NAMES))
    if not callable(builder):
        raise UserError(f"plug-in mixer {name!r}: builder must be callable")
    module = _caller_module()
    _check_unique("mixer", name, MIXERS, module)
    entry = MixerPlugin(name, builder, description, _source(module, builder))
    MIXERS[name] = entry
    return entry


def register_family(info: Any) -> Any:
    """Register a task family (a :class:`mamba_kan.tasks.registry.FamilyInfo`); returns ``info``.

    The same function as :func:`mamba_kan.tasks.registry.register_family` (the built-in families use it too).
    """
    from mamba_kan.tasks.registry import register_family as register

    return register(info)


def note_family(name: str, exists: bool) -> PluginSource | None:
    """Called by the task registry for each family it registers (``exists``: the name is registered already):
    checks the name and, for a family registered from outside mamba_kan, records its :class:`PluginSource`.
    Returns that source (None for the built-in families). A plug-in cannot replace a built-in family."""
    if not isinstance(name, str) or not _FAMILY_NAME.match(name):
        raise UserError(
            f"task family name {name!r} must be lower-case letters, digits and '_', starting with a letter"
        )
    module = _caller_module()
    if module == "mamba_kan" or module.startswith("mamba_kan."):
        return None
    old = FAMILY_SOURCES.get(name)
    if old is None and exists:
        raise UserError(f"task family {name!r} is a built-in family; a plug-in family needs another name")
    if old is not None and old.module != module:
        raise UserError(f"task family {name!r} is registered twice: by {old.module} and by {module}")
    src = _source(module, sys.modules.get(module))
    FAMILY_SOURCES[name] = src
    return src


# --- loading -----------------------------------------------------------------------------------------------------
def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def env_modules() -> list[str]:
    """The modules named in ``MAMBA_KAN_PLUGINS`` (comma-separated, blanks ignored)."""
    return [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]


def load_module(module: str) -> None:
    """Import plug-in ``module`` (once); a module that fails to import is a one-line UserError naming it."""
    if module in _modules:
        return
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$", module):
        raise UserError(f"plug-in {module!r} is not a module name (e.g. my_plugins or my_pkg.plugins)")
    try:
        importlib.import_module(module)
    except UserError as exc:
        raise UserError(f"plug-in {module}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any failure in third-party code is the plug-in's, named as such
        raise UserError(f"plug-in {module} cannot be imported: {_first_line(exc)}") from None
    _modules.append(module)


def _load_entry_point(ep: metadata.EntryPoint) -> None:
    where = f"entry point {ep.name!r} = {ep.value!r} (group {ENTRY_POINT_GROUP})"
    try:
        obj = ep.load()
        if callable(obj) and not isinstance(obj, type(sys)):
            obj()
    except UserError as exc:
        raise UserError(f"plug-in {where}: {exc}") from None
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"plug-in {where} cannot be loaded: {_first_line(exc)}") from None


def ensure_loaded() -> None:
    """Load the installed entry points and ``MAMBA_KAN_PLUGINS`` modules, once per process.

    Called by every registry lookup (variant names, task names), so library users get their plug-ins without
    calling anything. A plug-in that fails raises a one-line UserError (and is retried on the next lookup).
    """
    global _loading, _loaded
    if _loaded or _loading:
        return
    _loading = True  # a plug-in that consults a registry while it is imported must not re-enter
    try:
        seen: set[str] = set()
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.value in seen:  # the same distribution found twice on sys.path
                continue
            seen.add(ep.value)
            _load_entry_point(ep)
        for module in env_modules():
            load_module(module)
        _loaded = True
    finally:
        _loading = False


def load_plugins(modules: Iterable[str] = (), export: bool = True) -> list[str]:
    """Load the entry points, ``MAMBA_KAN_PLUGINS`` and ``modules`` (``--plugin``); with ``export`` add
    ``modules`` to ``MAMBA_KAN_PLUGINS`` so that processes started from this one load them too. Returns the
    modules loaded by name, in order."""
    ensure_loaded()
    for module in modules:
        load_module(module)
    if export:
        names = list(dict.fromkeys(env_modules() + list(modules)))
        if names:
            os.environ[PLUGINS_ENV] = ",".join(names)
    return list(_modules)


def loaded_modules() -> tuple[str, ...]:
    """Modules loaded by name so far (``--plugin``, ``MAMBA_KAN_PLUGINS``, :func:`load_plugins`)."""
    return tuple(_modules)


# --- the registry-built vocabulary -------------------------------------------------------------------------------
def ffn_names() -> tuple[str, ...]:
    """Feedforward blocks: the built-in levels (mlp, bspline, kan), then plug-ins in registration order."""
    ensure_loaded()
    return tuple(FFN_LEVELS) + tuple(FFNS)


def mixer_names() -> tuple[str, ...]:
    """Mixers: the built-in ones (transformer, mamba, none), then plug-ins in registration order."""
    ensure_loaded()
    return tuple(ALL_MIXERS) + tuple(MIXERS)


def _suffix(mixer: str) -> str:
    return "ffn" if mixer == "none" else mixer


def variant_name(ffn: str, mixer: str) -> str:
    """``("glu", "transformer") -> "glu_transformer"``; built-in levels as :func:`mamba_kan.design.variant_name`."""
    if ffn not in ffn_names() or mixer not in mixer_names():
        raise ValueError(f"not a registered level: ffn={ffn!r} mixer={mixer!r}")
    return f"{ffn}_{_suffix(mixer)}"


def try_parse_variant(name: str) -> tuple[str, str] | None:
    """``"glu_mamba" -> ("glu", "mamba")`` for built-in and registered levels; None for an unknown name."""
    v = _builtin_parse(name)
    if v is not None:
        return v.ffn, v.mixer
    ffn, sep, suffix = str(name).partition("_")
    if not sep:
        return None
    mixer = "none" if suffix == "ffn" else suffix
    if ffn in ffn_names() and mixer in mixer_names():
        return ffn, mixer
    return None


def plugin_variants() -> tuple[str, ...]:
    """Variants that use at least one plug-in component, mixer-major (built-in mixers first)."""
    return tuple(variant_name(f, m) for m in mixer_names() for f in ffn_names() if f in FFNS or m in MIXERS)


def all_variants() -> tuple[str, ...]:
    """Every nameable variant: :data:`mamba_kan.design.ALL_VARIANTS`, then :func:`plugin_variants`."""
    return tuple(ALL_VARIANTS) + plugin_variants()


# --- cache keys --------------------------------------------------------------------------------------------------
def cell_sources(model: str, task: str) -> dict[str, PluginSource]:
    """The plug-in components a cell of ``model`` on ``task`` uses: {"ffn:<name>" | "mixer:<name>" |
    "family:<name>": source}; empty for a cell made of built-in parts only."""
    out: dict[str, PluginSource] = {}
    parsed = try_parse_variant(model)
    if parsed is not None:
        ffn, mixer = parsed
        if ffn in FFNS:
            out[f"ffn:{ffn}"] = FFNS[ffn].source
        if mixer in MIXERS:
            out[f"mixer:{mixer}"] = MIXERS[mixer].source
    family = str(task).partition("/")[0].partition("@")[0]
    if family in FAMILY_SOURCES:
        out[f"family:{family}"] = FAMILY_SOURCES[family]
    return out


def cell_source_hash(model: str, task: str) -> str | None:
    """16 hex digits over the source digests of the plug-in components of the cell (``model``, ``task``), or None
    when it uses none (its key is then exactly what it was before plug-ins existed)."""
    ensure_loaded()
    sources = cell_sources(model, task)
    if not sources:
        return None
    text = "\n".join(f"{k}={s.digest}" for k, s in sorted(sources.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
