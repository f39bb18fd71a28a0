import gc

from tripwire.gc_tuning import GEN0_THRESHOLD, settled_heap


def test_settled_heap_freezes_what_exists_and_restores_the_collector_afterwards():
    before = gc.get_threshold()
    gc.unfreeze()
    with settled_heap():
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (GEN0_THRESHOLD, before[1], before[2])
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
