"""megatron_ext.shared_prefix: each group's prompt runs once in the RL update. The packing is checked by hand on a
small batch (and refused where groups do not share prompts); the update in that layout has the per-response
layout's loss, metrics and gradients at TP=1, TP=2 and PP=2, on-policy and with PPO epochs and a KL reference."""

import pytest
import torch
from conftest import read_rank_results, run_torchrun
from tiny_models import save_random_llama, tiny_llama_config

from megatron_ext.shared_prefix import microbatches, pack_groups

PAD = 0


def rows(*sequences):
    """Right-padded [B, S] tokens and the response mask from (prompt, response) pairs."""
    S = max(len(p) + len(r) for p, r in sequences)
    tokens = torch.full((len(sequences), S), PAD)
    mask = torch.zeros(len(sequences), S, dtype=torch.bool)
    for i, (p, r) in enumerate(sequences):
        tokens[i, : len(p) + len(r)] = torch.tensor(p + r)
        mask[i, len(p) : len(p) + len(r)] = True
    return tokens, mask


def test_groups_pack_into_prompt_then_response_slots():
    tokens, mask = rows(([5, 6, 7], [10, 11]), ([5, 6, 7], [12]), ([8], [13, 14, 15]), ([8], [16]))
    packed = pack_groups(tokens, mask, group_size=2, pad_id=PAD)
    layout = packed["layout"]
    assert (layout.prompt_len, layout.response_len, layout.group_size) == (3, 3, 2)
    assert packed["tokens"].tolist() == [[5, 6, 7, 10, 11, PAD, 12, PAD, PAD], [8, PAD, PAD, 13, 14, 15, 16, PAD, PAD]]
    assert layout.positions_Sb.T.tolist() == [[0, 1, 2, 3, 4, 5, 3, 4, 5], [0, 1, 2, 1, 2, 3, 1, 2, 3]]
    assert layout.prompt_valid_bP.tolist() == [[True, True, True], [True, False, False]]
    # a response's first token is predicted by its prompt's last position, the others by their predecessor
    assert packed["source_col"].tolist() == [[2, 3, 4], [2, 6, 7], [0, 3, 4], [0, 6, 7]]
    assert packed["response_tokens"].tolist() == [[10, 11, PAD], [12, PAD, PAD], [13, 14, 15], [16, PAD, PAD]]
    assert packed["response_mask"].sum(1).tolist() == [2, 1, 3, 1]
    assert packed["position_index"][:, 0].tolist() == [3, 3, 1, 1]  # first response token's column in [B, S]
    second = microbatches(packed, 2)[1]
    assert second["rows"] == slice(2, 4) and second["tokens"].tolist() == [packed["tokens"][1].tolist()]
    assert second["source_index"].tolist() == [[0, 3, 4], [0, 6, 7]]  # into its own [1 * S] logits
    with pytest.raises(ValueError, match="whole groups"):
        microbatches(packed, 3)


@pytest.mark.parametrize("sequences,group", [
    ((([5, 6], [1]), ([5, 7], [2])), 2),  # a group whose prompts differ
    ((([5, 6], [1]), ([5, 6], [])), 2),  # a response without tokens
    ((([5, 6], [1]), ([5, 6], [2]), ([5, 6], [3])), 2),  # rows not a multiple of the group
])
def test_rows_that_do_not_share_prompts_by_group_are_not_packed(sequences, group):
    tokens, mask = rows(*sequences)
    assert pack_groups(tokens, mask, group) is None


@pytest.mark.multirank
@pytest.mark.parametrize("tp,pp", [(1, 1), (2, 1), (1, 2)])
def test_update_in_the_shared_prompt_layout_equals_the_per_response_update(tmp_path, tp, pp):
    hf_dir = save_random_llama(tmp_path / "hf", tiny_llama_config(), seed=6)
    run_torchrun("tests/dist/shared_prefix_worker.py", tp * pp, hf_dir, tmp_path, tp, pp)
    for rank in read_rank_results(tmp_path, tp * pp):
        for name, r in rank.items():
            assert r["shared_layout_used"], name
            assert r["plain_attention_calls"] == 0 and r["shared_attention_calls"] > 0, (name, r)
            assert r["grad_scale"] > 0 and r["grad_rel_diff"] < 1e-5, (name, r)
            for key, diff in r["metric_diffs"].items():
                assert diff <= 1e-5 * max(1.0, abs(r["metrics"][key])), (name, key, r)
