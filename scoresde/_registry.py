"""Name → class registries, one per kind of component (SDEs, nets, samplers, parameterizations, ...).

    SAMPLERS = Registry("sampler")

    @SAMPLERS.register("heun")
    class HeunSampler(Sampler): ...

    SAMPLERS.register("ddim", DPMSolver, order=1)        # a name with fixed keyword arguments
    SAMPLERS.build("heun", steps=18)                     # validated against HeunSampler's signature
    SAMPLERS.build("mypkg.samplers:MySampler", steps=4)  # a user's class, named by its import path

Configs and the command line name components through these, so a user's class works there once it is
registered (or named by import path), with no edit to the library.
"""
from __future__ import annotations

import collections.abc
import importlib
import inspect
import typing
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple


class Registry:
    """A mapping from names to classes or functions (or plain descriptions) with fixed keyword arguments.

    Args:
        kind: what is registered, used in error messages ("sampler", "SDE", ...).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, Tuple[Callable, Dict[str, Any]]] = {}

    # -- filling it ------------------------------------------------------------------------------------
    def register(self, name: str, obj: Optional[Callable] = None, **fixed):
        """Register ``obj`` under ``name`` (with ``fixed`` keyword arguments); without ``obj``, a decorator."""
        if not isinstance(name, str) or not name or ":" in name:
            raise ValueError(f"a {self.kind} name must be a non-empty string without ':'; got {name!r}")

        def add(target: Callable) -> Callable:
            self._entries[name] = (target, dict(fixed))
            return target

        return add if obj is None else add(obj)

    # -- reading it ------------------------------------------------------------------------------------
    def names(self) -> List[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"

    def get(self, name: str) -> Tuple[Callable, Dict[str, Any]]:
        """(callable, fixed keyword arguments) for a registered name or an import path ``"module:attr"``."""
        if isinstance(name, str) and name in self._entries:
            target, fixed = self._entries[name]
            return target, dict(fixed)
        if isinstance(name, str) and ":" in name:
            return _import(name, self.kind), {}
        valid = ", ".join(repr(n) for n in self._entries)
        raise ValueError(f"unknown {self.kind} {name!r}; valid choices: {valid} (or an import path "
                         f"'package.module:Name')")

    def parameters(self, name: str) -> List[str]:
        """The keyword arguments the entry accepts (those fixed by the registration excluded)."""
        target, fixed = self.get(name)
        return [p for p in signature_parameters(target) if p not in fixed]

    def build(self, name: str, *args, **kwargs):
        """Call the entry with ``kwargs``; unknown keyword arguments raise an `OptionError` listing the valid ones.

        Errors raised by the constructor itself (a ValueError for a bad value) pass through unchanged.
        """
        target, fixed = self.get(name)
        if not callable(target):
            raise TypeError(f"{self.kind} {name!r} cannot be built: it is a {type(target).__name__}")
        check_keywords(target, kwargs, f"{self.kind} {name!r}", exclude=fixed)
        return target(*args, **{**fixed, **kwargs})


class OptionError(TypeError, ValueError):
    """An unknown keyword argument for a registered component (both a TypeError and a ValueError)."""


def signature_parameters(target: Callable) -> List[str]:
    """Names of the keyword parameters of a class's constructor or a function (``self`` and ``*args`` left out)."""
    fn = target.__init__ if inspect.isclass(target) else target
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.name != "self"
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def signature_defaults(target: Callable) -> Dict[str, Any]:
    """The keyword parameters of ``target`` (as `signature_parameters`) that have defaults, with them."""
    fn = target.__init__ if inspect.isclass(target) else target
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    return {name: params[name].default for name in signature_parameters(target)
            if params[name].default is not inspect.Parameter.empty}


def accepts_any_keyword(target: Callable) -> bool:
    """Whether the constructor / function takes ``**kwargs``."""
    fn = target.__init__ if inspect.isclass(target) else target
    try:
        return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return True


def check_keywords(target: Callable, kwargs: Mapping[str, Any], what: str, exclude=()) -> None:
    """Raise an `OptionError` naming the unknown keyword arguments of ``target`` and the valid ones."""
    if accepts_any_keyword(target):
        return
    valid = [p for p in signature_parameters(target) if p not in exclude]
    unknown = [k for k in kwargs if k not in valid]
    if unknown:
        raise OptionError(f"unknown option(s) {', '.join(unknown)} for {what}; valid options: "
                        f"{', '.join(valid) or '(none)'}")


def check_types(target: Callable, kwargs: Mapping[str, Any], what: str) -> None:
    """Raise an `OptionError` when a keyword argument does not have the type its annotation states.

    Understood annotations: int, float (an int is fine), bool, str, Optional / Union of those, and sequences
    (a list or tuple). Anything else is not checked.
    """
    fn = target.__init__ if inspect.isclass(target) else target
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: nothing to check against
        return
    for key, value in kwargs.items():
        hint = hints.get(key)
        if hint is not None and not _matches(value, hint):
            raise OptionError(f"{what}: {key} must be {_describe(hint)}; got {value!r} ({type(value).__name__})")


def _matches(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, collections.abc.Sequence):
        return isinstance(value, (list, tuple))
    return True


def _describe(hint) -> str:
    if typing.get_origin(hint) is typing.Union:
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "null"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if hint in names:
        return names[hint]
    if typing.get_origin(hint) in (list, tuple, collections.abc.Sequence):
        return "a list"
    return str(hint)


def _import(path: str, kind: str) -> Callable:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import module {module_name!r} for {kind} {path!r}: {err}") from None
    target = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ValueError(f"module {module_name!r} has no attribute {attr!r} (for {kind} {path!r})")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{path!r} is not a class or function (for {kind})")
    return target
