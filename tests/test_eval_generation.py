"""The transformers-generate backend on a tiny random Llama with a byte-level BPE tokenizer trained here:
left-padded batching, max_new_tokens and the truncated flag, stop strings, EOS, sampling seeds; then the
`python -m pipeline.eval run` command end to end on it."""

import json

import pytest
import torch

from pipeline.eval.generation import HFGenerate, cut_at_stop
from tiny_models import save_random_llama, tiny_llama_config

EOS, PAD = 0, 1


def save_bpe_tokenizer(out_dir):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([f"What is {a} + {b}? The answer is \\boxed{{{a + b}}} </answer>"
                             for a in range(30) for b in range(30)], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<pad>")
    fast.save_pretrained(out_dir)
    return fast


def make_model(out_dir, seed=0, silent_head=False):
    tokenizer = save_bpe_tokenizer(out_dir)
    config = tiny_llama_config(vocab_size=len(tokenizer), num_layers=2, hidden_size=64, num_attention_heads=4,
                               num_key_value_heads=2, head_dim=16, intermediate_size=128, eos_token_id=EOS,
                               bos_token_id=None, pad_token_id=PAD)
    save_random_llama(out_dir, config, seed=seed)
    if silent_head:  # zero final norm: all logits 0, greedy picks token 0 = EOS at once
        from transformers import LlamaForCausalLM

        model = LlamaForCausalLM.from_pretrained(out_dir)
        with torch.no_grad():
            model.model.norm.weight.zero_()
        model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("tiny_llama"))


GREEDY = dict(n=1, temperature=0.0, top_p=1.0, seed=0)


def test_greedy_batches_match_single_prompts_and_budget_truncates(model_dir):
    gen = HFGenerate(str(model_dir), batch_size=4)
    prompts = ["What is 3 + 4?", "Hi", "The answer is \\boxed{12} and what is 20 + 9?"]
    batched = gen(prompts, max_new_tokens=12, stop=(), **GREEDY)
    single = [gen([p], max_new_tokens=12, stop=(), **GREEDY)[0] for p in prompts]
    assert batched == single  # left padding changes nothing
    for [c] in batched:
        assert c.num_tokens <= 12 and c.truncated == (c.num_tokens == 12)
    long_prompt, [long] = next((p, c) for p, c in zip(prompts, batched) if c[0].truncated)
    [[short]] = gen([long_prompt], max_new_tokens=3, stop=(), **GREEDY)
    assert short.num_tokens == 3 and short.truncated and long.text.startswith(short.text.rstrip("\ufffd"))


def _stop_inside_a_merged_token(gen):
    """A prompt whose greedy output holds a multi-character ASCII token, and a stop string ending inside it."""
    for a in range(8):
        prompt = f"What is {a} + 7?"
        batch = gen.tokenizer([prompt], return_tensors="pt")
        ids = gen.model.generate(**batch, max_new_tokens=24, do_sample=False, eos_token_id=gen.eos_ids,
                                 pad_token_id=PAD)[0, batch["input_ids"].shape[1]:].tolist()
        for t in ids:
            piece = gen.tokenizer.decode([t]).strip()
            if piece.isascii() and piece.isalpha() and len(piece) >= 3:
                return prompt, ids, piece[:-1]
    pytest.fail("no multi-character token in the tiny model's greedy outputs; change the seed")


def test_stop_strings_cut_the_response_and_are_kept(model_dir):
    gen = HFGenerate(str(model_dir), batch_size=4)
    prompt, ids, stop = _stop_inside_a_merged_token(gen)
    [[full]] = gen([prompt], max_new_tokens=24, stop=(), **GREEDY)
    texts = [gen.tokenizer.decode(ids[:k], skip_special_tokens=True) for k in range(len(ids) + 1)]
    expected_tokens = next(k for k, t in enumerate(texts) if stop in t)
    [[cut]] = gen([prompt], max_new_tokens=24, stop=("@@never@@", stop), **GREEDY)
    assert cut.text == full.text[: full.text.find(stop) + len(stop)] and cut.text.endswith(stop)
    assert texts[expected_tokens] != cut.text  # the stop string ended inside the last token: text is cut there
    assert cut.num_tokens == expected_tokens and not cut.truncated
    # a stop string completed by the very last allowed token still counts as a stop, not a truncation
    [[edge]] = gen([prompt], max_new_tokens=expected_tokens, stop=(stop,), **GREEDY)
    assert edge == cut
    [[short]] = gen([prompt], max_new_tokens=expected_tokens - 1, stop=(stop,), **GREEDY)
    assert short.truncated and short.num_tokens == expected_tokens - 1 and stop not in short.text
    assert cut_at_stop("a </answer> b </answer>", ("</answer>", " b")) == ("a </answer>", True)
    assert cut_at_stop("abc", ("x",)) == ("abc", False)


def test_eos_ends_a_response_without_truncation(tmp_path):
    with pytest.raises(ValueError, match="not a torch dtype"):
        HFGenerate(str(tmp_path), dtype="fp32")
    gen = HFGenerate(str(make_model(tmp_path / "eos", silent_head=True)))
    [[a], [b]] = gen(["What is 1 + 1?", "x"], max_new_tokens=1, stop=(), **GREEDY)
    assert a.num_tokens == b.num_tokens == 1 and not a.truncated and not b.truncated and a.text == ""


def test_sampling_is_seeded_and_gives_n_per_prompt(model_dir):
    gen = HFGenerate(str(model_dir), batch_size=8)
    kwargs = dict(n=3, temperature=1.0, top_p=0.95, max_new_tokens=8, stop=())
    first = gen(["What is 3 + 4?", "Hi"], seed=1, **kwargs)
    assert [len(group) for group in first] == [3, 3]
    assert first == gen(["What is 3 + 4?", "Hi"], seed=1, **kwargs)
    assert first != gen(["What is 3 + 4?", "Hi"], seed=2, **kwargs)
    assert len({c.text for c in first[0]}) > 1


@pytest.mark.workers
def test_eval_run_command_end_to_end(model_dir, tmp_path):
    from pipeline.eval.__main__ import main

    questions = tmp_path / "rl_test.jsonl"
    questions.write_text("".join(json.dumps({"question": f"What is {a} + {a}?", "answer": str(2 * a), "level": 1}) + "\n"
                                 for a in range(5)))
    out = tmp_path / "eval"
    code = main(["run", "--model", str(model_dir), "--benchmark", f"synthetic:{questions}", "--template", "r1",
                 "--max-new-tokens", "6", "--temperature", "1.0", "--n", "2", "--pass-k", "1", "2",
                 "--chunk-size", "2", "--grader-workers", "1", "--backend-options", '{"batch_size": 4}',
                 "--out", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    bench = results["benchmarks"]["synthetic"]
    assert bench["num_questions"] == 5 and bench["samples_per_question"] == 2 and set(bench["pass@k"]) == {"1", "2"}
    records = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(records) == 10 and {r["template"] for r in records} == {"r1"}
    assert bench["response_len_mean"] == pytest.approx(sum(r["num_tokens"] for r in records) / 10)
    assert bench["truncation_rate"] == pytest.approx(sum(r["truncated"] for r in records) / 10)
    assert results["config"]["max_new_tokens"] == 6 and (out / "results.md").read_text().startswith("# Evaluation")
    assert main(["run", "--model", str(model_dir), "--benchmark", f"synthetic:{tmp_path / 'missing.jsonl'}"]) == 2
