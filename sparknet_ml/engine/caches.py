"""The bounded per-process caches and the one place that empties them.

Every process-wide cache of sparknet_ml is a :class:`BoundedCache`: a Python worker's solvers
and scoring nets (:mod:`.worker`, :mod:`.scoring`), onnxruntime sessions
(:mod:`.onnx_scoring`), opened training blocks and fetched states
(:mod:`sparknet_ml.tasks.blocks`, :mod:`sparknet_ml.tasks.states`), and the files the driver
shipped to Spark Connect sessions (:mod:`sparknet_ml.driver.exchange`). Each keeps at most
its ``size`` entries, the least recently used evicted first, and :func:`clear_caches` empties
every one a process holds (releasing their host and GPU memory).
"""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Callable

_CACHES: weakref.WeakSet[BoundedCache] = weakref.WeakSet()


class BoundedCache:
    """At most ``size`` values by key, the least recently used evicted first.

    Parameters
    ----------
    size : int
        Most entries kept (at least 1).
    on_evict : callable, optional
        Called with ``(key, value)`` for each entry evicted, discarded or cleared, to release
        what is kept elsewhere for it.

    Examples
    --------
    >>> cache = BoundedCache(2)
    >>> cache.get_or_make("a", lambda: 1), cache.get_or_make("b", lambda: 2)
    (1, 2)
    >>> cache.get("a")
    1
    >>> cache.put("c", 3)  # evicts "b", the least recently used
    >>> list(cache)
    ['a', 'c']
    >>> clear_caches()
    >>> len(cache)
    0
    """

    def __init__(self, size: int, on_evict: Callable[[object, object], None] | None = None):
        self.size = size
        self._on_evict = on_evict
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.RLock()
        _CACHES.add(self)

    def get(self, key, default=None):
        """The value of ``key``, now the most recently used, or ``default``."""
        with self._lock:
            if key not in self._entries:
                return default
            self._entries.move_to_end(key)
            return self._entries[key]

    def put(self, key, value) -> None:
        """Keep ``value`` under ``key``, evicting the least recently used beyond ``size``."""
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            self._evict_down_to(self.size)

    def get_or_make(self, key, make: Callable[[], object]):
        """The value of ``key``, or ``make()``'s kept under it, made after the least recently
        used entries beyond ``size - 1`` are evicted (so that at most ``size`` are alive)."""
        with self._lock:
            if key in self._entries:
                return self.get(key)
            self._evict_down_to(self.size - 1)
            value = self._entries[key] = make()
            return value

    def discard(self, key) -> None:
        """Evict ``key``'s entry, if held."""
        with self._lock:
            if key in self._entries:
                self._evicted(key, self._entries.pop(key))

    def clear(self) -> None:
        """Evict every entry."""
        with self._lock:
            self._evict_down_to(0)

    def _evict_down_to(self, count: int) -> None:
        while len(self._entries) > count:
            self._evicted(*self._entries.popitem(last=False))

    def _evicted(self, key, value) -> None:
        if self._on_evict is not None:
            self._on_evict(key, value)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        """The keys, least recently used first."""
        with self._lock:
            return iter(list(self._entries))


def clear_caches() -> None:
    """Empty every :class:`BoundedCache` of this process (its solvers, nets, sessions, blocks,
    fetched states and the record of shipped files: all are made or fetched again on use)."""
    for cache in list(_CACHES):
        cache.clear()
