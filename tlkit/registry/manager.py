"""The plugin manager: finds plugins through entry points and keeps name → spec maps.

Built-in plugins are found exactly like third-party ones: through the
``tlkit`` entry-point group of the installed ``tlkit`` distribution.  A plugin
that fails to import, raises in a hook or registers a duplicate name is
recorded with its error; every other plugin keeps working.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from tlkit.errors import TlkitError
from tlkit.registry import hookspecs
from tlkit.registry.specs import AugmentationSpec, BaseSpec, HeadSpec, TrackerSpec, with_plugin
from tlkit.suggest import closest

ENTRY_POINT_GROUP = "tlkit"
BUILTIN_DISTRIBUTION = "tlkit"
PLUGINS_ENV = "TLKIT_PLUGINS"

# kind -> (spec class, hook name, CLI flag used in messages)
KINDS: dict[str, tuple[type, str, str]] = {
    "base": (BaseSpec, "register_bases", "--base"),
    "head": (HeadSpec, "register_heads", "--head"),
    "augmentation": (AugmentationSpec, "register_augmentations", "--aug"),
    "tracker": (TrackerSpec, "register_trackers", "--track"),
}


@dataclass
class PluginInfo:
    """What the registry knows about one plugin (one entry point)."""

    name: str
    distribution: str
    version: str
    builtin: bool
    module: str
    hooks: list[str] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``name (distribution version)``, as used in error messages."""
        return f"{self.name} ({self.distribution} {self.version})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "builtin": self.builtin,
            "module": self.module,
            "hooks": list(self.hooks),
            "registered": list(self.registered),
            "errors": list(self.errors),
        }


def _enabled_third_party(env: dict[str, str]) -> set[str] | None:
    """Names allowed by TLKIT_PLUGINS; None means "all" (variable unset)."""
    raw = env.get(PLUGINS_ENV)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


class Registry:
    """Loads plugins once and answers name → spec questions.

    ``entry_points`` defaults to the installed ``tlkit`` group; tests pass
    their own.  ``env`` defaults to ``os.environ`` (for ``TLKIT_PLUGINS``).
    """

    def __init__(
        self,
        entry_points: Iterable[metadata.EntryPoint] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.plugins: list[PluginInfo] = []
        self.specs: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
        self._owner: dict[tuple[str, str], PluginInfo] = {}
        self.conflicts: dict[tuple[str, str], list[str]] = {}
        self._loaded: dict[str, PluginInfo] = {}  # entry-point name -> info, of the plugins registered
        self._resolved: dict[str, BaseSpec] = {}  # bases made on demand by the resolve_base hook
        self._pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self._pm.add_hookspecs(hookspecs)
        if entry_points is None:
            entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
        self._load(list(entry_points), dict(os.environ if env is None else env))

    # -- loading -----------------------------------------------------------
    def _load(self, entry_points: list[metadata.EntryPoint], env: dict[str, str]) -> None:
        allowed = _enabled_third_party(env)
        # Built-ins first, so a third party can never shadow a built-in name.
        entry_points.sort(key=lambda ep: (not self._is_builtin(ep), ep.name))
        infos: dict[str, PluginInfo] = {}
        seen: set[tuple[str, str, str]] = set()
        for ep in entry_points:
            info = self._info_for(ep)
            key = (ep.name, ep.value, info.distribution)
            if key in seen:  # the same distribution found twice on sys.path
                continue
            seen.add(key)
            if not info.builtin and allowed is not None:
                if ep.name not in allowed and info.distribution not in allowed:
                    continue
            self.plugins.append(info)
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must not break the others
                info.errors.append(f"failed to import {ep.value!r}: {type(exc).__name__}: {exc}")
                continue
            try:
                self._pm.register(module, name=ep.name)
            except Exception as exc:
                info.errors.append(f"could not be registered: {exc}")
                continue
            infos[ep.name] = info
            self._loaded[ep.name] = info
            info.hooks = sorted(impl.name for impl in self._pm.get_hookcallers(module) or [])
        for kind, (spec_cls, hook_name, _flag) in KINDS.items():
            caller = getattr(self._pm.hook, hook_name)
            # Called one by one (not through pluggy's LIFO call) so each name is
            # attributed to its plugin and one plugin's exception stays its own.
            for impl in caller.get_hookimpls():
                info = infos[impl.plugin_name]
                register = self._registrar(kind, spec_cls, info)
                try:
                    impl.function(**{arg: register for arg in impl.argnames})
                except Exception as exc:
                    info.errors.append(f"{hook_name} raised {type(exc).__name__}: {exc}")

    @staticmethod
    def _is_builtin(ep: metadata.EntryPoint) -> bool:
        dist = getattr(ep, "dist", None)
        return dist is not None and dist.name == BUILTIN_DISTRIBUTION

    def _info_for(self, ep: metadata.EntryPoint) -> PluginInfo:
        dist = getattr(ep, "dist", None)
        return PluginInfo(
            name=ep.name,
            distribution=dist.name if dist is not None else "?",
            version=dist.version if dist is not None else "?",
            builtin=self._is_builtin(ep),
            module=ep.value,
        )

    def _registrar(
        self,
        kind: str,
        spec_cls: type[BaseSpec] | type[HeadSpec] | type[AugmentationSpec] | type[TrackerSpec],
        info: PluginInfo,
    ):
        def register(spec: Any) -> None:
            if not isinstance(spec, spec_cls):
                raise TypeError(f"register() for {kind}s takes a tlkit.{spec_cls.__name__}, got {type(spec).__name__}")
            key = (kind, spec.name)
            if key in self._owner:
                first = self._owner[key]
                message = (
                    f"{kind} {spec.name!r} is registered by both plugin {first.label} "
                    f"and plugin {info.label}; the first one is used"
                )
                self.conflicts.setdefault(key, [first.label]).append(info.label)
                info.errors.append(message)
                if message not in first.errors:
                    first.errors.append(message)
                return
            self._owner[key] = info
            self.specs[kind][spec.name] = with_plugin(spec, info.name)
            info.registered.append(f"{kind}:{spec.name}")

        return register

    # -- queries -----------------------------------------------------------
    @property
    def bases(self) -> dict[str, BaseSpec]:
        return self.specs["base"]

    @property
    def heads(self) -> dict[str, HeadSpec]:
        return self.specs["head"]

    @property
    def augmentations(self) -> dict[str, AugmentationSpec]:
        return self.specs["augmentation"]

    @property
    def trackers(self) -> dict[str, TrackerSpec]:
        return self.specs["tracker"]

    def get(self, kind: str, name: str) -> Any:
        """The spec of ``kind`` called ``name``; a TlkitError with suggestions otherwise."""
        specs = self.specs[kind]
        if name in specs:
            return specs[name]
        if kind == "base":
            resolved = self._resolve_base(name)
            if resolved is not None:
                return resolved
        flag = KINDS[kind][2]
        list_cmd = "list-augmentations" if kind == "augmentation" else f"list-{kind}s"
        raise TlkitError(
            f"unknown {kind} {name!r} ({flag}){closest(name, specs)} — run 'tlkit {list_cmd}' to see all {len(specs)}"
        )

    def base(self, name: str) -> BaseSpec:
        return self.get("base", name)

    def head(self, name: str) -> HeadSpec:
        return self.get("head", name)

    def augmentation(self, name: str) -> AugmentationSpec:
        return self.get("augmentation", name)

    def tracker(self, name: str) -> TrackerSpec:
        return self.get("tracker", name)

    def plugin(self, name: str) -> PluginInfo | None:
        return next((p for p in self.plugins if p.name == name), None)

    def find(self, name: str) -> list[tuple[str, Any]]:
        """Every ``(kind, spec)`` registered under ``name``, in any kind (a base a plugin resolves too)."""
        found = [(kind, specs[name]) for kind, specs in self.specs.items() if name in specs]
        if name not in self.specs["base"]:
            resolved = self._resolve_base(name)
            if resolved is not None:
                found.insert(0, ("base", resolved))
        return found

    def _resolve_base(self, name: str) -> BaseSpec | None:
        """The base a plugin's ``resolve_base`` hook makes for ``name`` (the first one, kept), or None."""
        if name in self._resolved:
            return self._resolved[name]
        # One by one (pluggy's order), so the spec is stamped with the plugin that made it.
        for impl in self._pm.hook.resolve_base.get_hookimpls()[::-1]:
            info = self._loaded[impl.plugin_name]
            try:
                spec = impl.function(name=name)
            except TlkitError:
                raise
            except Exception as exc:  # a plugin bug: say whose, in one line
                raise TlkitError(
                    f"plugin {info.label} failed to resolve base {name!r}: {type(exc).__name__}: {exc}"
                ) from exc
            if spec is None:
                continue
            if not isinstance(spec, BaseSpec) or spec.name != name:
                got = spec.name if isinstance(spec, BaseSpec) else type(spec).__name__
                raise TlkitError(
                    f"plugin {info.label}: resolve_base({name!r}) must return a tlkit.BaseSpec named "
                    f"{name!r} or None, got {got!r}; report this to the plugin's author"
                )
            resolved = with_plugin(spec, info.name)
            assert isinstance(resolved, BaseSpec)
            self._resolved[name] = resolved
            return resolved
        return None


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry()
    return _REGISTRY


def list_specs(kind: str) -> list[Any]:
    """All registered specs of ``kind`` (``"base"``, ``"head"``, ``"augmentation"`` or ``"tracker"``), by name."""
    if kind not in KINDS:
        raise TlkitError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    specs = get_registry().specs[kind]
    return [specs[name] for name in sorted(specs)]
