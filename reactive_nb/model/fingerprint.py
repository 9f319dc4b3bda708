"""Definition fingerprints: a number that changes when what a handler would run changes.

A cached result records its function's fingerprint so a redefined function (a re-run
notebook cell) never serves the old definition's frames. The fingerprint covers the
handler's code (bytecode, constants, names, nested code objects), its defaults and closure
cells, and what the code reaches through its globals when called:

* plain values (str, bytes, numbers, None, dates, Decimal, ... and lists, tuples, dicts and
  sets of them) by their canonical value, so editing ``SQL = "..."`` in another cell counts;
* functions defined in user code (``__main__``, exec'd cells, files outside the Python
  installation and site-packages) by their own fingerprint, recursively, cycle-safe;
* modules, classes and library callables by their qualified name only;
* containers of more than MAX_NODES items, numpy arrays over MAX_ARRAY_BYTES and pandas
  objects by a summary (type, length, shape, dtypes, column labels), and any other object by
  its type's qualified name. Never ``id()``, ``repr()`` or ``hash()`` of a str, so the
  number is the same in every process running the same Python version.

Limits: it is computed once per definition, so a global edited later without redefining the
function is not seen; a user module's attribute is followed one level (``helpers.QUERY``) but
not further (``helpers.sub.QUERY`` counts as ``helpers`` and ``sub``); a class counts by
name only, so editing a user class's methods is not seen unless the class instance is
called directly (its ``__call__`` is followed); helper functions are followed MAX_DEPTH
levels deep and at most MAX_FUNCTIONS of them per fingerprint.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from types import (
    BuiltinFunctionType,
    ClassMethodDescriptorType,
    CodeType,
    FunctionType,
    MethodDescriptorType,
    MethodType,
    MethodWrapperType,
    ModuleType,
    WrapperDescriptorType,
)
from typing import Any

from .inputs import canonical_json

__all__ = ["definition_fingerprint"]

#: Helper functions are followed this many calls deep; deeper ones count by name.
MAX_DEPTH = 8
#: At most this many functions are walked per fingerprint; later ones count by name.
MAX_FUNCTIONS = 256
#: Containers with more items than this count by type and length only.
MAX_NODES = 10_000
#: numpy arrays up to this size count by their bytes; larger ones by dtype and shape.
MAX_ARRAY_BYTES = 1 << 20
#: Containers nested deeper than this count by type and length only.
MAX_VALUE_DEPTH = 16

_MASK = (1 << 63) - 1
_GLOBAL_LOADS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS"})
_ATTR_LOADS = frozenset({"LOAD_ATTR", "LOAD_METHOD"})
#: Packages whose code is never "user code" even when installed outside site-packages.
_NOT_USER = frozenset({"reactive_nb"})
_CONTAINERS = (list, tuple, dict, set, frozenset)
#: Callables implemented in C: they have no code to walk, only a name.
_NATIVE = (BuiltinFunctionType, ClassMethodDescriptorType, MethodDescriptorType,
           MethodWrapperType, WrapperDescriptorType)
_CALLABLES = (FunctionType, MethodType, functools.partial, *_NATIVE)


def definition_fingerprint(handler: Callable[..., Any],
                           options: Mapping[str, Any] | None = None) -> int:
    """A stable 63-bit number over the handler's code and everything it reaches (see module),
    and over the function's ``options`` (declared dependencies, TTL...): a function
    redefined with other options is another definition, whose live queries do not join
    the old definition's groups."""
    walker = _Walker()
    walker.walk_callable(handler, 0, force=True)
    if options:
        walker.value(dict(options), 0)
    return int.from_bytes(walker.digest(), "big") & _MASK


def _qualname(obj: Any) -> str:
    module = _safe_getattr(obj, "__module__")
    name = _safe_getattr(obj, "__qualname__") or _safe_getattr(obj, "__name__")
    if not isinstance(name, str):
        name = type(obj).__qualname__
    return f"{module}.{name}" if isinstance(module, str) else name


@functools.lru_cache(maxsize=1)
def _library_roots() -> tuple[str, ...]:
    """Directories holding the standard library and installed packages."""
    import site
    import sysconfig

    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    roots.update(sysconfig.get_paths().get(k, "") for k in ("stdlib", "platstdlib",
                                                          "purelib", "platlib"))
    try:
        roots.update(site.getsitepackages())
        roots.add(site.getusersitepackages())
    except AttributeError:  # old virtualenv's site module
        pass
    return tuple(os.path.join(os.path.normcase(os.path.abspath(r)), "")
                 for r in sorted(roots) if r)


def _is_user_file(filename: str | None) -> bool:
    if not filename or filename.startswith("<frozen"):
        return False
    if filename.startswith("<"):  # exec()'d source, IPython cells
        return True
    path = os.path.normcase(os.path.abspath(filename))
    return not path.startswith(_library_roots())


def _is_user_function(f: FunctionType) -> bool:
    module = f.__module__ or ""
    if module == "__main__":
        return True
    if module.partition(".")[0] in _NOT_USER:
        return False
    return _is_user_file(f.__code__.co_filename)


def _is_user_module(m: ModuleType) -> bool:
    if m.__name__.partition(".")[0] in _NOT_USER:
        return False
    filename = getattr(m, "__file__", None)
    return isinstance(filename, str) and _is_user_file(filename)


def _global_loads(code: CodeType) -> Iterator[tuple[str, str | None]]:
    """Each (global name, attribute loaded right after it or None) that ``code`` reads."""
    import dis

    previous: str | None = None
    for ins in dis.get_instructions(code):
        if previous is not None:
            attr = ins.argval if ins.opname in _ATTR_LOADS else None
            yield previous, attr if isinstance(attr, str) else None
            previous = None
        if ins.opname in _GLOBAL_LOADS and isinstance(ins.argval, str):
            previous = ins.argval
    if previous is not None:
        yield previous, None


def _count_nodes(value: Any, limit: int) -> int:
    """Items in nested builtin containers, counting stops past ``limit`` (so cycles end)."""
    count, stack = 0, [value]
    while stack and count <= limit:
        v = stack.pop()
        count += 1
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, _CONTAINERS):
            stack.extend(v)
    return count


def _safe_getattr(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name, None)
    except Exception:  # a __getattr__ that raises something other than AttributeError
        return None


class _Walker:
    """Feeds length-prefixed, type-tagged tokens of a definition into one digest."""

    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=8, person=b"reactive_nb.def")
        #: id() of each function walked -> its visit number, for back-references; the
        #: objects are kept alive in _keep so no id is reused while the walk runs.
        self._visited: dict[int, int] = {}
        self._keep: list[object] = []
        self._globals_seen: set[tuple[int, str, str | None]] = set()

    def digest(self) -> bytes:
        return self._hash.digest()

    def feed(self, tag: str, payload: str | bytes = b"") -> None:
        data = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
        self._hash.update(f"{tag}:{len(data)}:".encode())
        self._hash.update(data)

    # -- callables -------------------------------------------------------------------------

    def walk_callable(self, f: Any, depth: int, *, force: bool = False) -> None:
        """Feed a callable: user functions in full, everything else by name and parts."""
        if isinstance(f, FunctionType):
            self._function(f, depth, force)
        elif isinstance(f, MethodType):
            owner = f.__self__
            self.feed("method", _qualname(owner if isinstance(owner, type) else type(owner)))
            self._keep.append(f.__func__)
            self.walk_callable(f.__func__, depth, force=force)
        elif isinstance(f, functools.partial):
            self.feed("partial", str(len(f.args)))
            self.walk_callable(f.func, depth, force=force)
            self.value(f.args, depth + 1)
            self.value(f.keywords, depth + 1)
        elif isinstance(f, _NATIVE):
            self.feed("native", _qualname(f))
        elif isinstance(f, type):
            self.feed("class", _qualname(f))
        else:
            self._instance(f, depth, force)

    def _function(self, f: FunctionType, depth: int, force: bool) -> None:
        seen = self._visited.get(id(f))
        if seen is not None:
            self.feed("ref", str(seen))
            return
        if not force and (depth > MAX_DEPTH or len(self._visited) >= MAX_FUNCTIONS
                          or not _is_user_function(f)):
            self.feed("callable", _qualname(f))
            return
        self._visited[id(f)] = len(self._visited)
        self._keep.append(f)
        self.feed("function", f.__qualname__)
        self._code(f.__code__, f.__globals__, depth)
        self.feed("defaults")
        self.value(f.__defaults__, depth + 1)
        self.value(f.__kwdefaults__, depth + 1)
        for cell in f.__closure__ or ():
            try:
                contents = cell.cell_contents
            except ValueError:  # a cell not yet assigned
                self.feed("empty-cell")
                continue
            self.feed("cell")
            self.value(contents, depth + 1)

    def _instance(self, f: Any, depth: int, force: bool) -> None:
        """A callable object: its class and name, plus what it wraps or a user __call__."""
        cls = type(f)
        self.feed("instance", f"{_qualname(cls)}:{_qualname(f)}")
        wrapped = _safe_getattr(f, "__wrapped__")
        if wrapped is not None and callable(wrapped):
            self._keep.append(wrapped)
            self.walk_callable(wrapped, depth + 1, force=force)
            return
        call = next((k.__dict__["__call__"] for k in cls.__mro__ if "__call__" in k.__dict__),
                    None)
        if isinstance(call, FunctionType):
            self.walk_callable(call, depth + 1, force=force)

    def _code(self, code: CodeType, globals_: dict[str, Any], depth: int) -> None:
        self.feed("code", code.co_name)
        self.feed("args", f"{code.co_argcount},{code.co_posonlyargcount},"
                          f"{code.co_kwonlyargcount},{code.co_flags}")
        self.feed("bytecode", code.co_code)
        self.feed("names", "\x00".join(code.co_names))
        self.feed("vars", "\x00".join(code.co_varnames + code.co_cellvars + code.co_freevars))
        for const in code.co_consts:
            if isinstance(const, CodeType):
                self._code(const, globals_, depth)
            else:
                self.value(const, depth + 1)
        for name, attr in _global_loads(code):
            self._global(name, attr, globals_, depth)

    def _global(self, name: str, attr: str | None, globals_: dict[str, Any],
                depth: int) -> None:
        key = (id(globals_), name, attr)
        if key in self._globals_seen:
            self.feed("again", name)
            return
        self._globals_seen.add(key)
        if name not in globals_:
            self.feed("builtin" if hasattr(builtins, name) else "missing", name)
            return
        v = globals_[name]
        self.feed("global", name)
        self.value(v, depth + 1)
        if attr is not None and isinstance(v, ModuleType) and _is_user_module(v):
            self.feed("attr", attr)
            if hasattr(v, attr):
                self.value(getattr(v, attr), depth + 1)

    # -- values ----------------------------------------------------------------------------

    def value(self, v: Any, depth: int) -> None:
        """Feed a global, constant, default or closure value."""
        if v is Ellipsis:
            self.feed("ellipsis")
            return
        if v is None or type(v) in (str, int, float, bool, bytes, complex):
            self.feed("plain", canonical_json({"": v}))
            return
        if isinstance(v, ModuleType):
            self.feed("module", v.__name__)
            return
        if isinstance(v, type):
            self.feed("class", _qualname(v))
            return
        if isinstance(v, _CALLABLES):
            self.walk_callable(v, depth)
            return
        if isinstance(v, _CONTAINERS):
            self._container(v, depth)
            return
        if isinstance(v, slice):
            self.feed("slice")
            self.value((v.start, v.stop, v.step), depth + 1)
            return
        module = type(v).__module__ or ""
        if module.startswith(("numpy", "pandas")) and self._data(v):
            return
        try:
            self.feed("plain", canonical_json({"": v}))
        except Exception:  # no canonical form (or a half-built model): count its type
            if callable(v):
                self.walk_callable(v, depth)
            else:
                self.feed("object", _qualname(type(v)))

    def _container(self, v: Any, depth: int) -> None:
        size = _count_nodes(v, MAX_NODES)
        if size > MAX_NODES or depth > MAX_VALUE_DEPTH:
            self.feed("big", f"{_qualname(type(v))}:{len(v)}")
            return
        try:
            self.feed("plain", canonical_json({"": v}))
            return
        except TypeError:  # holds functions, modules or other objects: walk it
            pass
        self.feed("container", f"{_qualname(type(v))}:{len(v)}")
        if isinstance(v, dict):
            entries = sorted(((self._subdigest(k, depth), item) for k, item in v.items()),
                             key=lambda e: e[0])
            for key, item in entries:
                self.feed("key", key)
                self.value(item, depth + 1)
        elif isinstance(v, set | frozenset):
            for digest in sorted(self._subdigest(item, depth) for item in v):
                self.feed("item", digest)
        else:
            for item in v:
                self.value(item, depth + 1)

    def _subdigest(self, v: Any, depth: int) -> bytes:
        """Digest of one set item or dict key on its own, so their order cannot matter."""
        walker = _Walker()
        walker.value(v, depth + 1)
        return walker.digest()

    def _data(self, v: Any) -> bool:
        """Feed a cheap summary of a numpy array or pandas object; False for their scalars."""
        np = sys.modules.get("numpy")
        if np is not None and isinstance(v, np.ndarray):
            self.feed("ndarray", f"{v.dtype.str}:{v.shape}")
            if v.dtype.kind not in "OV" and v.nbytes <= MAX_ARRAY_BYTES:
                self.feed("bytes", v.tobytes())
            return True
        shape = _safe_getattr(v, "shape")
        if not isinstance(shape, tuple) or not shape or type(v).__module__.startswith("numpy"):
            return False
        self.feed("frame", f"{_qualname(type(v))}:{shape}")
        dtypes = _safe_getattr(v, "dtypes")
        dtype = _safe_getattr(v, "dtype")
        if hasattr(dtypes, "tolist"):
            self.feed("dtypes", "\x00".join(str(d) for d in dtypes.tolist()))
        elif dtype is not None:
            self.feed("dtype", str(dtype))
        columns = _safe_getattr(v, "columns")
        if columns is not None and len(columns) <= MAX_NODES:
            self.feed("columns", "\x00".join(str(c) for c in columns))
        return True
