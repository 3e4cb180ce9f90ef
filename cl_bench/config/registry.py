"""Plugin discovery: a pluggy PluginManager fed from the `cl_bench` entry-point group.

One broken plugin never hides the others: an import or hook failure is recorded with the
plugin's name in `Registry.errors`, and the rest still load.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pluggy

from cl_bench.contracts import hookspecs
from cl_bench.contracts.specs import BackboneSpec, LoggerSpec, MethodSpec, ScenarioSpec
from cl_bench.errors import clip, shown, unknown_name
from cl_bench.paths import slug_problem


@dataclass(frozen=True)
class PluginError:
    plugin: str
    message: str

    def __str__(self) -> str:
        return f"plugin '{self.plugin}': {self.message}"


@dataclass(frozen=True)
class Registered:
    """A spec and the plugin that provided it."""

    spec: Any
    plugin: str
    distribution: str | None = None  # "name version" of the installed package that provides the plugin


# What a plugin's code may raise without taking cl_bench down: any exception, and also sys.exit()
# and KeyboardInterrupt raised by the plugin itself (at import or in a hook).
PLUGIN_FAILURES = (Exception, SystemExit, KeyboardInterrupt)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"called sys.exit({clip(repr(exc.code), 60)})"
    text = str(exc).strip().splitlines()
    return clip(f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": "), 200)


class Registry:
    """Methods, scenarios and backbones from every installed plugin (and any given directly)."""

    _KINDS = {
        "method": ("cl_bench_methods", MethodSpec),
        "scenario": ("cl_bench_scenarios", ScenarioSpec),
        "backbone": ("cl_bench_backbones", BackboneSpec),
        "logger": ("cl_bench_loggers", LoggerSpec),
    }

    def __init__(self, plugins: Iterable[object] = (), *, entry_points: bool = True) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self.errors: list[PluginError] = []
        self._distributions: dict[str, str] = {}  # plugin name -> "distribution version"
        plugins = tuple(plugins)
        self.given = (plugins, entry_points)  # how to make this registry again (a multi-process run's workers)
        if entry_points:
            self._load_entry_points()
        for plugin in plugins:
            self._pm.register(plugin)
        self._report_unknown_hooks()
        self._specs: dict[str, dict[str, Registered]] = {}

    def _report_unknown_hooks(self) -> None:
        """pluggy's `check_pending`, reported per plugin instead of raised: a misspelled hook
        (`cl_bench_method`) would otherwise be ignored without a word."""
        try:
            self._pm.check_pending()
            return
        except pluggy.PluginValidationError:
            pass
        known = [name for name in vars(hookspecs) if name.startswith(f"{hookspecs.PROJECT}_")]
        for name, caller in vars(self._pm.hook).items():
            if getattr(caller, "spec", True) is None:
                for impl in caller.get_hookimpls():
                    if not impl.optionalhook:
                        hint = "the plugin's implementation is never called"
                        if name == f"{hookspecs.PROJECT}_run_event":  # the one hook of releases before the split
                            hint = f"it was split into {', '.join(hookspecs.RUN_EVENTS)}; {hint}"
                        message = unknown_name("hook", name, known, hint=hint).args[0]
                        self.errors.append(PluginError(impl.plugin_name, message))

    def _load_entry_points(self) -> None:
        seen: set[str] = set()
        for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT):
            if ep.name in seen:  # the same distribution found twice on sys.path
                continue
            seen.add(ep.name)
            try:
                module = ep.load()
                self._pm.register(module, name=ep.name)
                if ep.dist is not None:
                    self._distributions[ep.name] = f"{ep.dist.metadata['Name']} {ep.dist.version}"
            except PLUGIN_FAILURES as exc:  # a broken plugin must not take the others down
                self.errors.append(PluginError(ep.name, f"cannot be loaded ({_one_line(exc)})"))

    def _collect(self, kind: str) -> dict[str, Registered]:
        if kind in self._specs:
            return self._specs[kind]
        spec_type: type[Any]  # one of the spec classes: each has a name
        hook_name, spec_type = self._KINDS[kind]
        found: dict[str, Registered] = {}
        # Registration order, built-ins first: on a name clash the built-in keeps its name.
        impls = getattr(self._pm.hook, hook_name).get_hookimpls()
        for impl in sorted(impls, key=lambda i: not getattr(i.plugin, "__name__", "").startswith("cl_bench.")):
            try:
                specs: list[Any] = list(impl.function() or [])
            except PLUGIN_FAILURES as exc:
                self.errors.append(PluginError(impl.plugin_name, f"{hook_name}() failed ({_one_line(exc)})"))
                continue
            for spec in specs:
                if not isinstance(spec, spec_type):
                    self.errors.append(
                        PluginError(impl.plugin_name, f"{hook_name}() returned {type(spec).__name__}, not {spec_type.__name__}")
                    )
                elif slug_problem(spec.name):  # names become file names: refused here, not at the first run
                    self.errors.append(PluginError(impl.plugin_name, f"{kind} name {shown(spec.name)} {slug_problem(spec.name)}; ignored"))
                elif spec.name in found:
                    self.errors.append(
                        PluginError(impl.plugin_name, f"{kind} '{spec.name}' is already provided by plugin '{found[spec.name].plugin}'; ignored")
                    )
                else:
                    found[spec.name] = Registered(spec, impl.plugin_name, self._distributions.get(impl.plugin_name))
        self._specs[kind] = dict(sorted(found.items()))
        return self._specs[kind]

    def all(self, kind: str) -> dict[str, Registered]:
        """Every registered spec of `kind` ("method", "scenario" or "backbone"), by name."""
        return self._collect(kind)

    def get(self, kind: str, name: str) -> Registered:
        """The spec called `name`, or a `UserError` listing the known names and the closest one."""
        specs = self._collect(kind)
        if name not in specs:
            broken = f" (plugins that failed to load: {', '.join(e.plugin for e in self.errors)})" if self.errors else ""
            raise unknown_name(kind, name, specs, hint=f"'clbench ls' lists them{broken}.")
        return specs[name]

    @contextlib.contextmanager
    def attached(self, plugins: Iterable[object]):
        """Register `plugins` (a run's loggers) for the duration of a `with` block."""
        plugins = list(plugins)
        for plugin in plugins:
            self._pm.register(plugin)
        try:
            yield
        finally:
            for plugin in plugins:
                if self._pm.is_registered(plugin):  # a failed tracker may have been detached already
                    self._pm.unregister(plugin)

    def methods(self) -> dict[str, MethodSpec]:
        return {name: reg.spec for name, reg in self._collect("method").items()}

    def scenarios(self) -> dict[str, ScenarioSpec]:
        return {name: reg.spec for name, reg in self._collect("scenario").items()}

    def backbones(self) -> dict[str, BackboneSpec]:
        return {name: reg.spec for name, reg in self._collect("backbone").items()}

    def emit(self, event: str, *, detach_failed: bool = False, **arguments: Any) -> list[PluginError]:
        """Call every implementation of the run-event hook `event`; failures are returned, not raised.

        With `detach_failed`, a plugin that fails is unregistered at once: an experiment tracker that
        cannot reach its server costs one bounded failure and a warning, not one per event."""
        failures = []
        for impl in getattr(self._pm.hook, event).get_hookimpls():
            try:  # like pluggy, pass only the arguments the implementation declares
                impl.function(*(arguments[name] for name in impl.argnames))
            except PLUGIN_FAILURES as exc:
                failures.append(PluginError(impl.plugin_name, f"{event} failed ({_one_line(exc)})" + ("; it is off for the rest of this run" if detach_failed else "")))
                if detach_failed and self._pm.is_registered(impl.plugin):
                    self._pm.unregister(impl.plugin)
        return failures
