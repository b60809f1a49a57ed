"""The plugin manager: hookspecs, entry points, and calling hooks from async code."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any, TypeVar

import pluggy

from livebridge import hookspecs
from livebridge.exceptions import PluginError

__all__ = ["ENTRY_POINT_GROUP", "await_me_maybe", "call_chain", "call_each", "get_plugin_manager"]

ENTRY_POINT_GROUP = "livebridge"
T = TypeVar("T")


def get_plugin_manager(extra_plugins: Iterable[object] = (), *, load_entry_points: bool = True
                       ) -> pluggy.PluginManager:
    """Build a plugin manager: the hookspecs, every ``livebridge`` entry point, then extras.

    Built-in sources are entry points like any third-party plugin. A hook implementation whose
    name matches no hookspec fails here, at start-up, instead of never being called.
    """
    pm = pluggy.PluginManager("livebridge")
    pm.add_hookspecs(hookspecs)
    if load_entry_points:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin in extra_plugins:
        pm.register(plugin)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {exc.plugin!r}: {exc}") from exc
    return pm


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
