"""Every process-wide cache is bounded and emptied by one call (hardening round 2, item 12:
the opened blocks and the record of shipped files grew without bound)."""
import numpy as np
import pytest

from sparknet_ml.engine.caches import BoundedCache, clear_caches
from sparknet_ml.tasks import blocks

from .test_blocks import drop, rows_of

# (module, cache, its bound)
CACHES = [("sparknet_ml.engine.worker", "_SOLVERS", "MAX_CACHED_SOLVERS"),
          ("sparknet_ml.engine.scoring", "_NETS", 1),
          ("sparknet_ml.engine.onnx_scoring", "_SESSIONS", 1),
          ("sparknet_ml.tasks.blocks", "_OPEN", "MAX_OPEN_BLOCKS"),
          ("sparknet_ml.tasks.states", "_FETCHED", 1),
          ("sparknet_ml.driver.exchange", "_SHIPPED", "MAX_SHIPPED")]


def cache_and_bound(module_name, name, bound):
    module = pytest.importorskip(module_name)  # the engine's Caffe modules need pycaffe
    return getattr(module, name), getattr(module, bound) if isinstance(bound, str) else bound


def test_a_bounded_cache_keeps_the_most_recently_used_and_makes_room_first():
    evicted = []
    cache = BoundedCache(2, on_evict=lambda key, value: evicted.append(key))
    assert (cache.get_or_make("a", lambda: 1), cache.get_or_make("b", lambda: 2)) == (1, 2)
    assert cache.get("a") == 1  # now the most recently used
    alive = []
    assert cache.get_or_make("c", lambda: alive.append(len(cache)) or 3) == 3
    assert alive == [1] and evicted == ["b"] and list(cache) == ["a", "c"]
    assert cache.get_or_make("a", lambda: pytest.fail("made again")) == 1
    cache.discard("a")
    cache.put("d", 4)
    assert evicted == ["b", "a"] and list(cache) == ["c", "d"]
    clear_caches()
    assert evicted == ["b", "a", "c", "d"] and len(cache) == 0


@pytest.mark.parametrize("module, name, bound", CACHES)
def test_every_process_cache_stays_within_its_bound(module, name, bound):
    cache, bound = cache_and_bound(module, name, bound)
    for i in range(bound + 3):
        cache.get_or_make(("filler", i), object)
        assert len(cache) <= bound
    assert list(cache) == [("filler", i) for i in range(3, bound + 3)]
    clear_caches()


def test_clear_caches_empties_every_process_cache():
    from sparknet_ml.engine import worker
    caches = [cache_and_bound(*where)[0] for where in CACHES]
    for cache in caches:
        cache.put("key", object())
    worker._BLOCKS["key"] = (np.zeros(1), np.zeros(1))
    clear_caches()
    assert [len(cache) for cache in caches] == [0] * len(CACHES)
    assert not worker._BLOCKS  # released with its solver


def test_a_worker_keeps_at_most_max_open_blocks_mapped(tmp_path, monkeypatch):
    """A worker runs tasks of any partition, fit after fit: every block it opened stayed
    mapped (and a finished fit's deleted block file on disk) for the life of the process."""
    monkeypatch.setenv("SPARK_LOCAL_DIRS", str(tmp_path))
    clear_caches()
    x, y = np.arange(24, dtype=np.float32).reshape(6, 4) / 7, np.zeros(6, np.float32)
    handles = [blocks.write_block(i, rows_of(x, y), (4,), "open")
               for i in range(blocks.MAX_OPEN_BLOCKS + 2)]
    opened = [blocks.load_block(handle) for handle in handles]
    assert list(blocks._OPEN) == [h.features_path for h in handles[2:]]
    assert blocks.load_block(handles[-1]) is opened[-1]  # kept
    again = blocks.load_block(handles[0])  # evicted: mapped again, the same block
    assert again is not opened[0]
    np.testing.assert_array_equal(again[0], opened[0][0])
    drop(handles[0])
    assert handles[0].features_path not in list(blocks._OPEN)
    clear_caches()
