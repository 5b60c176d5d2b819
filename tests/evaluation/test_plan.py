"""The evaluation plan: fixed batches whatever the number of processes, every unit computed once, every pair matched once (docs/design.md §9.5)."""

from __future__ import annotations

import pytest

from sd4match_sdk.data import PFWillowDataset, SPairDataset
from sd4match_sdk.errors import ConfigError
from sd4match_sdk.evaluation.plan import build_plan, visiting_order
from sd4match_sdk.prompts import PromptKind


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_images_are_computed_once_and_each_pair_after_both_its_images(pfwillow_root, batch_size):
    dataset = PFWillowDataset(pfwillow_root, pair_list="test_pairs_DERIVED.csv")
    plan = build_plan(dataset, PromptKind.SINGLE, max_pairs=40, batch_size=batch_size)
    chosen = [dataset.records[i] for i in visiting_order(dataset, 40)]
    assert len(plan.images) == len({str(p) for r in chosen for p in (r.source_path, r.target_path)})
    for world in (1, 2, 3, 7):
        rounds = plan.schedule(world)
        computed = [b for r in rounds for b in r.batches if b is not None]
        assert computed == list(range(plan.num_batches))  # the same batches on any number of processes
        matched = sorted(p for r in rounds for m in r.matches for p in m)
        assert matched == list(range(40))
        done: set[int] = set()
        live: set[int] = set()
        for r in rounds:
            for b in r.batches:
                if b is not None:
                    done |= set(plan.batch(b))
                    live |= set(plan.batch(b))
            for position in (p for m in r.matches for p in m):
                assert set(plan.pair_images[position]) <= live  # both images are there when it is matched
            live -= set(r.release)
        assert done == set(range(len(plan.images))) and not live  # every image released after its last pair


def test_cpm_units_are_pairs_matched_where_they_are_computed(spair_root):
    plan = build_plan(SPairDataset(spair_root, "test"), PromptKind.CPM, batch_size=1)
    assert plan.per_pair and plan.num_units == 4 and not plan.images
    rounds = plan.schedule(3)
    assert [r.batches for r in rounds] == [(0, 1, 2), (3, None, None)]
    assert [r.matches for r in rounds] == [((0,), (1,), (2,)), ((3,), (), ())]


def test_class_prompts_key_images_by_category_too(spair_root):
    dataset = SPairDataset(spair_root, "test")
    single, per_class = (build_plan(dataset, kind) for kind in (PromptKind.SINGLE, PromptKind.CLASS))
    assert all(u.key[2] is None for u in single.images) and all(u.key[2] == u.category for u in per_class.images)
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        build_plan(dataset, PromptKind.SINGLE, batch_size=0)
