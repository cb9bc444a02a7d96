"""Block planning: exhaustive checks against a naive per-block reference."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from xferd.protocol.layout import reference_layout
from xferd.protocol.planning import PlanError, check_allocation, plan_round, runs

LAYOUT = reference_layout(block_size=4, hidden_size=2)  # items: 16, 16, 48, 64 bytes per block


def naive_copies(layout, total, sent, allocated, src, dst):
    """The reference semantics, one entry per block per buffer type, as byte maps."""
    block = layout.block_size
    remaining = total - sent
    tokens = min(remaining, allocated)
    copies = {}
    nblocks = -(-tokens // block)
    for i in range(nblocks):
        in_block = min(block, tokens - i * block)
        s, d = src[sent // block + i], dst[i]
        for b, buffer in enumerate(layout.buffers):
            if not buffer.per_token:
                if sent == 0 and i == 0:
                    length = buffer.item_len
                else:
                    continue
            else:
                length = buffer.item_len * in_block // block
            for offset in range(length):
                copies[(b, d * buffer.item_len + offset)] = s * buffer.item_len + offset
    return copies, tokens, remaining > allocated


def plan_copies(plan):
    copies = {}
    for entry in plan.entries:
        for offset in range(entry.length):
            key = (entry.buffer, entry.dst_offset + offset)
            assert key not in copies, "two entries write the same destination byte"
            copies[key] = entry.src_offset + offset
    return copies


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_plan_matches_naive_reference(data):
    block = LAYOUT.block_size
    total = data.draw(st.integers(0, 60), label="total")
    sent = data.draw(st.sampled_from(sorted({min(total, k * block) for k in range(total // block + 2)})))
    remaining = total - sent
    # a partial round moves at least one block (an empty one is refused: see below)
    aligned = [k * block for k in range(1, remaining // block + 1)] or [remaining]
    allocated = data.draw(st.one_of(st.sampled_from(aligned), st.integers(remaining, remaining + 9)))
    src = data.draw(st.permutations(range(32)))[: -(-total // block) + data.draw(st.integers(0, 2))]
    need = -(-min(remaining, allocated) // block)
    dst = data.draw(st.lists(st.integers(0, 40), min_size=need, max_size=need + 2, unique=True))
    plan = plan_round(LAYOUT, total_tokens=total, sent_tokens=sent, allocated_tokens=allocated,
                      src_indices=src, dst_indices=dst)
    want, tokens, partial = naive_copies(LAYOUT, total, sent, allocated, src, dst)
    assert plan_copies(plan) == want
    assert (plan.tokens, plan.partial, plan.sent_after) == (tokens, partial, sent + tokens)
    # coalescing: exactly one entry per contiguous run per per-token buffer, plus aux
    run_count = len(runs(src[sent // block: sent // block + plan.blocks], dst[:plan.blocks]))
    aux = 1 if sent == 0 and plan.blocks else 0
    assert len(plan.entries) == run_count * 3 + aux


def test_a_round_that_would_send_nothing_is_refused():
    with pytest.raises(PlanError, match="send nothing"):
        plan_round(LAYOUT, total_tokens=10, sent_tokens=0, allocated_tokens=0, src_indices=[0, 1, 2],
                   dst_indices=[])
    done = plan_round(LAYOUT, total_tokens=8, sent_tokens=8, allocated_tokens=0, src_indices=[0, 1],
                      dst_indices=[])
    assert (done.tokens, done.partial, done.entries) == (0, False, ())


def test_one_round_init_needs_blocks_for_everything():
    """The 6-frame init: all tokens in one round; too few blocks fail with the reason."""
    whole = plan_round(LAYOUT, total_tokens=10, sent_tokens=0, allocated_tokens=12, src_indices=[0, 1, 2],
                       dst_indices=[5, 6, 7], one_round=True)
    assert (whole.tokens, whole.partial) == (10, False)
    with pytest.raises(PlanError, match="6-frame init asks for all 10 tokens in one round.*hold 8"):
        plan_round(LAYOUT, total_tokens=10, sent_tokens=0, allocated_tokens=8, src_indices=[0, 1, 2],
                   dst_indices=[5, 6], one_round=True)


def test_first_round_of_2000_tokens_is_partial_and_aligned():
    layout = reference_layout(128, 64)
    plan = plan_round(layout, total_tokens=2000, sent_tokens=0, allocated_tokens=1024,
                      src_indices=list(range(16)), dst_indices=list(range(8)))
    assert (plan.tokens, plan.partial, plan.sent_after, plan.blocks) == (1024, True, 1024, 8)
    assert len(plan.entries) == 3 + 1  # contiguous: one entry per buffer type, plus aux
    resume = plan_round(layout, total_tokens=2000, sent_tokens=1024, allocated_tokens=976,
                        src_indices=list(range(16)), dst_indices=[0, 1, 2, 6, 7, 8, 14, 15])
    assert (resume.tokens, resume.partial, resume.sent_after) == (976, False, 2000)
    assert not any(e.buffer == 3 for e in resume.entries), "aux goes with the first round only"
    # runs [0,1,2] [6,7,8] [14,15] on the destination; source blocks 8..15 are contiguous
    assert len(resume.entries) == 3 * 3
    last_block_bytes = layout.buffers[0].item_len * (976 - 7 * 128) // 128
    last_run = [e for e in resume.entries if e.buffer == 0][-1]
    assert last_run.length == layout.buffers[0].item_len + last_block_bytes


def test_unaligned_partial_round_is_rejected_with_a_clear_error():
    with pytest.raises(PlanError, match="not a multiple of block size"):
        plan_round(LAYOUT, total_tokens=20, sent_tokens=0, allocated_tokens=6,
                   src_indices=range(5), dst_indices=range(2))


def test_unaligned_sent_tokens_are_rejected():
    with pytest.raises(PlanError, match="not aligned"):
        plan_round(LAYOUT, total_tokens=20, sent_tokens=6, allocated_tokens=8,
                   src_indices=range(5), dst_indices=range(2))


def test_last_block_partial_copies_only_its_tokens():
    plan = plan_round(LAYOUT, total_tokens=9, sent_tokens=8, allocated_tokens=4,
                      src_indices=[5, 6, 7], dst_indices=[3])
    assert plan.tokens == 1 and not plan.partial
    assert {e.buffer: e.length for e in plan.entries} == {0: 4, 1: 4, 2: 12}
    assert all(e.src_offset == 7 * LAYOUT.buffers[e.buffer].item_len for e in plan.entries)


def test_non_contiguous_destination_blocks_split_runs():
    plan = plan_round(LAYOUT, total_tokens=16, sent_tokens=0, allocated_tokens=16,
                      src_indices=[0, 1, 2, 3], dst_indices=[9, 10, 4, 5])
    per_buffer = [e for e in plan.entries if e.buffer == 0]
    assert [(e.dst_offset // 16, e.length // 16) for e in per_buffer] == [(9, 2), (4, 2)]


def test_repeated_destination_index_within_a_round_is_rejected():
    with pytest.raises(PlanError, match="repeat"):
        plan_round(LAYOUT, total_tokens=8, sent_tokens=0, allocated_tokens=8,
                   src_indices=[0, 1], dst_indices=[3, 3])


def test_destination_blocks_reused_across_rounds_are_fine():
    first = plan_round(LAYOUT, total_tokens=16, sent_tokens=0, allocated_tokens=8,
                       src_indices=range(4), dst_indices=[2, 3])
    second = plan_round(LAYOUT, total_tokens=16, sent_tokens=8, allocated_tokens=8,
                        src_indices=range(4), dst_indices=[2, 3])
    assert {e.dst_offset for e in first.entries if e.buffer == 0} == \
        {e.dst_offset for e in second.entries if e.buffer == 0}
    assert {e.src_offset for e in second.entries if e.buffer == 0} == {2 * 16}


def test_zero_tokens_is_an_empty_successful_round():
    plan = plan_round(LAYOUT, total_tokens=0, sent_tokens=0, allocated_tokens=0,
                      src_indices=[], dst_indices=[])
    assert (plan.tokens, plan.partial, plan.entries) == (0, False, ())


def test_one_token_sends_one_row_and_the_aux_item():
    plan = plan_round(LAYOUT, total_tokens=1, sent_tokens=0, allocated_tokens=4,
                      src_indices=[7], dst_indices=[2])
    assert {e.buffer: e.length for e in plan.entries} == {0: 4, 1: 4, 2: 12, 3: 64}


def test_insufficient_destination_blocks_are_rejected():
    with pytest.raises(PlanError, match="destination blocks"):
        plan_round(LAYOUT, total_tokens=12, sent_tokens=0, allocated_tokens=12,
                   src_indices=range(3), dst_indices=[0, 1])


def test_source_shorter_than_total_is_rejected():
    with pytest.raises(PlanError, match="source holds"):
        plan_round(LAYOUT, total_tokens=12, sent_tokens=0, allocated_tokens=12,
                   src_indices=[0, 1], dst_indices=[0, 1, 2])


def test_bounds_of_source_pool_and_registered_destination():
    with pytest.raises(PlanError, match="outside the pool"):
        plan_round(LAYOUT, total_tokens=4, sent_tokens=0, allocated_tokens=4,
                   src_indices=[10], dst_indices=[0], src_num_blocks=10)
    with pytest.raises(PlanError, match="outside the registered"):
        plan_round(LAYOUT, total_tokens=4, sent_tokens=0, allocated_tokens=4,
                   src_indices=[0], dst_indices=[5], dst_num_blocks=[5, 5, 5, 5])


@pytest.mark.parametrize("allocated,count,ok", [
    (1024, 8, True), (976, 8, True), (None, 8, True), (0, 0, True),
    (0, 8, False),  # nothing allocated, yet blocks sent
    (1024, 16, False),  # language side uses 64-token blocks
    (1024, 4, False),  # language side uses 256-token blocks
    (129, 1, False),
])
def test_block_size_mismatch_is_caught_from_shape(allocated, count, ok):
    layout = reference_layout(128, 64)
    if ok:
        check_allocation(layout, allocated, count)
    else:
        with pytest.raises(PlanError, match="block size mismatch"):
            check_allocation(layout, allocated, count)

