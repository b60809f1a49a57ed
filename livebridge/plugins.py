"""The plugin manager: hookspecs, entry points, checks at start-up, and calling hooks.

Every problem with a plugin is a one-line ``PluginError`` naming the plugin (or its entry
point) and the fix, raised when the plugin manager is built: a plugin that cannot be
imported, a misspelled hook (with a "did you mean"), a function named like a hook but not
decorated, a hook wrapper, a source class without ``type_name``.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

from livebridge import hookspecs
from livebridge.exceptions import PluginError

if TYPE_CHECKING:
    from livebridge.source import Source

__all__ = [
    "ENTRY_POINT_GROUP",
    "await_me_maybe",
    "call_chain",
    "call_each",
    "collect_source_types",
    "get_plugin_manager",
]

ENTRY_POINT_GROUP = "livebridge"
T = TypeVar("T")
_HOOKS = sorted(n for n in dir(hookspecs) if n.startswith("livebridge_"))


def get_plugin_manager(extra_plugins: Iterable[object] = (), *, load_entry_points: bool = True
                       ) -> pluggy.PluginManager:
    """Build a plugin manager: the hookspecs, every ``livebridge`` entry point, then extras.

    Built-in sources are entry points like any third-party plugin. An extra plugin that is
    already registered (say, by its entry point) is not registered twice.
    """
    pm = pluggy.PluginManager("livebridge")
    pm.add_hookspecs(hookspecs)
    if load_entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin entry point {ep.name!r} ({ep.value}) cannot be loaded: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            _register(pm, plugin, ep.name)
    for plugin in extra_plugins:
        if not pm.is_registered(plugin):
            _register(pm, plugin, None)
    for name, hook in vars(pm.hook).items():
        for impl in hook.get_hookimpls():
            if not hook.has_spec():
                raise PluginError(f"plugin {_label(pm, impl.plugin)}: {name} is not a "
                                  f"livebridge hook{_did_you_mean(name)}")
            if impl.wrapper or impl.hookwrapper:
                raise PluginError(
                    f"plugin {_label(pm, impl.plugin)}: {name} is a hook wrapper, which livebridge "
                    "does not support (it calls each implementation in turn, see "
                    "livebridge/hookspecs.py); use a plain @livebridge.hookimpl"
                )
    return pm


def _label(pm: pluggy.PluginManager, plugin: object) -> str:
    """How errors name a plugin: its entry point, module or class."""
    name = pm.get_name(plugin) if pm.is_registered(plugin) else None
    if name is not None and not name.isdigit():  # pluggy names objects by their id()
        return repr(name)
    kind = plugin if inspect.ismodule(plugin) or inspect.isclass(plugin) else type(plugin)
    return repr(getattr(kind, "__qualname__", kind.__name__))


def _register(pm: pluggy.PluginManager, plugin: object, name: str | None) -> None:
    label = repr(name) if name else _label(pm, plugin)
    for attr in dir(plugin):
        if not attr.startswith("livebridge_") or pm.parse_hookimpl_opts(plugin, attr):
            continue
        if callable(getattr(plugin, attr, None)) and (attr in _HOOKS or _did_you_mean(attr)):
            raise PluginError(
                f"plugin {label}: {attr} is not decorated with @livebridge.hookimpl, so it "
                f"would never be called{_did_you_mean(attr) if attr not in _HOOKS else ''}"
            )
    try:
        pm.register(plugin, name)
    except (ValueError, pluggy.PluginValidationError) as exc:
        raise PluginError(f"plugin {label}: {exc}") from None


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, _HOOKS, n=1, cutoff=0.8)
    return f"; did you mean {close[0]}?" if close else ""


def collect_source_types(pm: pluggy.PluginManager) -> dict[str, type[Source]]:
    """Every source type the loaded plugins provide, by ``type_name``."""
    types: dict[str, type[Source]] = {}
    for impl in _impls(pm.hook.livebridge_source_types):
        group: Any = impl.function()
        if inspect.isawaitable(group):
            if inspect.iscoroutine(group):
                group.close()
            raise PluginError(f"plugin {_label(pm, impl.plugin)}: livebridge_source_types must be "
                              "a plain def, not async def")
        for cls in group:
            where = f"plugin {_label(pm, impl.plugin)}: source class {cls.__qualname__}"
            type_name = getattr(cls, "type_name", None)
            if not isinstance(type_name, str) or not type_name:
                raise PluginError(f"{where} has no type_name; set type_name = '...' (the "
                                  "type: that selects it in bridge.yaml)")
            if type_name in types and types[type_name] is not cls:
                raise PluginError(f"{where}: source type {type_name!r} is provided twice: "
                                  f"by {types[type_name].__module__} and {cls.__module__}")
            types[type_name] = cls
    return types


async def await_me_maybe(value: Any) -> Any:
    """Await ``value`` if it is awaitable (pluggy calls hooks synchronously)."""
    if inspect.isawaitable(value):
        return await value
    return value


def _impls(hook: pluggy.HookCaller) -> list[pluggy.HookImpl]:
    # pluggy calls the last registered implementation first; keep that order.
    return list(reversed(hook.get_hookimpls()))


async def call_each(hook: pluggy.HookCaller, **kwargs: Any) -> list[Any]:
    """Call every implementation of ``hook`` in order, awaiting each before the next."""
    results = []
    for impl in _impls(hook):
        args = {name: kwargs[name] for name in impl.argnames}
        result = await await_me_maybe(impl.function(**args))
        if result is not None:
            results.append(result)
    return results


async def call_chain(hook: pluggy.HookCaller, value: T, name: str, **kwargs: Any) -> T | None:
    """Pass ``value`` (as keyword ``name``) through each implementation in turn.

    An implementation returns ``None`` to keep the value, a replacement to change it, or
    ``False`` to drop it, which ends the chain with ``None``.
    """
    for impl in _impls(hook):
        args = {arg: (value if arg == name else kwargs[arg]) for arg in impl.argnames}
        result = await await_me_maybe(impl.function(**args))
        if result is False:
            return None
        if result is not None and result is not True:
            value = result
    return value
