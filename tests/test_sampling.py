"""Next-token choice and the generation loop: seeds, greedy, top-k, top-p, temperature."""

from __future__ import annotations

import pytest
import torch

import charrnn
from charrnn.config import SampleConfig
from charrnn.data.tokenizer import UNK, banned_tokens, encode_prompt
from charrnn.errors import UsageError
from charrnn.sampling.decode import choose, filter_logits
from charrnn.sampling.engine import generate


def _generate(model, prompt_ids, **kw) -> list[int]:
    """Tokens of stream 0; fp32 unless asked, so that results compare with nn.LSTM's."""
    cfg = SampleConfig(**{"length": 60, "seed": 0, "precision": "fp32", **kw})
    return torch.cat(list(generate(model, prompt_ids, cfg)), dim=1)[0].tolist()


def test_same_seed_same_tokens_different_seed_different_tokens(loaded, engine):
    model, tok, _ = loaded
    prompt = tok.encode("The ")
    a = _generate(model, prompt, temperature=1.0, seed=123)
    b = _generate(model, prompt, temperature=1.0, seed=123)
    c = _generate(model, prompt, temperature=1.0, seed=124)
    assert a == b
    assert a != c


def test_same_seed_same_text_through_the_api(run_dir):
    kw = dict(prompt="The ", length=80, temperature=0.9, seed=7)
    first, second = charrnn.load(run_dir).sample(**kw), charrnn.load(run_dir).sample(**kw)
    assert first == second and len(first) == 80


def _argmax_by_forward(model, prompt_ids: list[int], length: int) -> list[int]:
    """The reference: rerun the whole growing sequence through nn.LSTM and take the argmax."""
    seq = list(prompt_ids)
    out = []
    with torch.no_grad():
        for _ in range(length):
            logits, _, _ = model(torch.tensor([seq]))
            nxt = int(logits[0, -1].argmax())
            out.append(nxt)
            seq.append(nxt)
    return out


def test_greedy_equals_argmax_of_forward_logits(loaded, engine):
    model, tok, _ = loaded
    prompt = tok.encode("The quick ")
    got = _generate(model, prompt, length=40, temperature=0.0)
    assert got == _argmax_by_forward(model, prompt, 40)


def test_greedy_ignores_the_seed_and_batches_agree(loaded, engine):
    model, tok, _ = loaded
    prompt = tok.encode("A")
    a = _generate(model, prompt, temperature=0.0, seed=1)
    b = _generate(model, prompt, temperature=0.0, seed=999)
    assert a == b
    cfg = SampleConfig(length=60, temperature=0.0, num_samples=3, seed=5, precision="fp32")
    rows = torch.cat(list(generate(model, prompt, cfg)), dim=1)
    for r in range(3):
        assert rows[r].tolist() == a


def test_temperature_near_zero_equals_greedy(loaded, engine):
    model, tok, _ = loaded
    prompt = tok.encode("The ")
    greedy = _generate(model, prompt, length=50, temperature=0.0)
    for seed in (0, 1, 2):
        assert _generate(model, prompt, length=50, temperature=1e-4, seed=seed) == greedy


def test_choose_temperature_zero_is_argmax(engine):
    logits = torch.randn(16, 40, generator=torch.Generator().manual_seed(0))
    assert torch.equal(choose(logits, 0.0), logits.argmax(-1))


def _random_logits(rows: int, vocab: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * 2


@pytest.mark.parametrize("k", [1, 3, 10])
def test_top_k_never_emits_outside_the_k_most_likely(k, engine):
    logits = _random_logits(4, 50, seed=k)
    allowed = torch.topk(logits, k, dim=-1).indices
    rep = 2000
    draws = choose(logits.repeat_interleave(rep, 0), temperature=1.5, top_k=k, seed=0).view(4, rep)
    for r in range(4):
        seen = set(draws[r].tolist())
        assert seen <= set(allowed[r].tolist())
        if k > 1:
            assert len(seen) > 1


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_top_p_never_emits_outside_the_nucleus(p, engine):
    logits = _random_logits(4, 50, seed=int(p * 10))
    probs = torch.softmax(logits.double(), -1)
    rep = 2000
    draws = choose(logits.repeat_interleave(rep, 0), temperature=1.0, top_p=p, seed=0).view(4, rep)
    for r in range(4):
        sorted_p, order = torch.sort(probs[r], descending=True)
        before = torch.cumsum(sorted_p, 0) - sorted_p
        nucleus = set(order[before < p].tolist())  # smallest top set whose mass reaches p
        assert set(draws[r].tolist()) <= nucleus


def test_filter_logits_top_p_keeps_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([[0.05, 0.5, 0.3, 0.15]]))
    kept = torch.isfinite(filter_logits(logits, 1.0, None, 0.75))[0].tolist()
    assert kept == [False, True, True, False]  # 0.5 + 0.3 >= 0.75
    kept = torch.isfinite(filter_logits(logits, 1.0, None, 0.85))[0].tolist()
    assert kept == [False, True, True, True]
    assert torch.isfinite(filter_logits(logits, 1.0, None, 1.0)).all()


def test_word_model_never_emits_unk(tmp_path, corpus_text, engine):
    from conftest import tiny_config

    from charrnn.checkpoint import load_model
    from charrnn.training.loop import train

    cfg = tiny_config(tmp_path / "w", **{"tokenizer.level": "word", "tokenizer.min_count": 3, "train.max_steps": 10})
    train(cfg, corpus_text + "rare1 rare2 rare3\n", "w")
    model, tok, _ = load_model(tmp_path / "w")
    assert UNK in tok.stoi
    unk = tok.stoi[UNK]
    assert banned_tokens(tok) == [unk]
    with torch.no_grad():
        # Make <unk> the model's favourite token: the ban must still hold.
        model.head.bias[unk] = 50.0
    for n in (1, 4):
        cfg = SampleConfig(length=300, temperature=3.0, num_samples=n, seed=0)
        for chunk in generate(model, tok.encode("the"), cfg, banned_tokens(tok)):
            assert unk not in chunk.flatten().tolist()


def test_empty_prompt_starts_after_a_newline(loaded):
    _, tok, _ = loaded
    assert encode_prompt(tok, "") == [tok.stoi["\n"]]


@pytest.mark.parametrize(
    "kw",
    [dict(length=-1), dict(temperature=-0.5), dict(top_k=0), dict(top_p=0.0), dict(top_p=1.5), dict(num_samples=0)],
)
def test_sample_config_rejects_bad_values(kw):
    with pytest.raises(UsageError):
        SampleConfig(**kw)


def test_the_default_precision_gives_sample_i_whatever_the_number_of_samples(tmp_path, corpus_file):
    """With the default precision a GRU (the torch step) and an LSTM give sample 0 of -N 8 as the
    text of -N 1, over thousands of tokens: one precision for every number of samples."""
    import charrnn

    for cell in ("gru", "lstm"):
        out = tmp_path / cell
        charrnn.train(
            corpus_file,
            out=out,
            cell=cell,
            hidden=48,
            layers=1,
            embed=16,
            max_steps=30,
            seq_len=16,
            batch_size=4,
            device="cpu",
            lr=0.02,
            warmup_steps=5,
        )
        model = charrnn.load(out)
        one = model.sample(length=3000, temperature=1.0, seed=7)
        assert model.samples(8, length=3000, temperature=1.0, seed=7)[0] == one, cell
