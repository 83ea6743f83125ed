"""Chi-square goodness of fit: temperature, top-k and top-p draw from exactly the distribution
they define, softmax(logits / T) restricted to the kept set and renormalised, with the native
kernel and with the torch path alike (the ``engine`` fixture).

No scipy: the statistic is computed here and compared with the chi-square critical value at
p = 0.0001 (Wilson-Hilferty approximation, which errs on the generous side for small df). Every
test also checks that the same draws are rejected against a nearby wrong distribution, so the
test has the power to fail.
"""

from __future__ import annotations

import math

import pytest
import torch

from charrnn.sampling.decode import choose

N = 20_000
Z = 3.719016  # standard normal quantile at 0.9999

# Deliberately not sorted, so index bookkeeping in the filters is exercised.
LOGITS = torch.tensor([0.3, 2.0, -1.0, 1.2, -0.4, 1.6, 0.8, -2.0, 0.0, 1.0])
V = LOGITS.numel()


def chi2_critical(df: int) -> float:
    """Upper 0.0001 quantile of chi-square(df), Wilson-Hilferty."""
    a = 2.0 / (9.0 * df)
    return df * (1.0 - a + Z * math.sqrt(a)) ** 3


def test_chi2_critical_values_are_sane():
    # Table values at p = 0.0001: 15.137 (df 1), 21.108 (3), 33.720 (9). The approximation is close, not stingy.
    for df, table in [(1, 15.137), (3, 21.108), (9, 33.720)]:
        assert table <= chi2_critical(df) < table * 1.08


def expected_probs(
    logits: torch.Tensor, temperature: float, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """The definition, written out independently in float64 Python."""
    z = (logits.double() / temperature).tolist()
    order = sorted(range(len(z)), key=lambda i: -z[i])
    keep = order[:top_k] if top_k else order
    m = max(z)
    w = {i: math.exp(z[i] - m) for i in keep}
    if top_p is not None:
        total = sum(w.values())
        nucleus, mass = [], 0.0
        for i in keep:  # most likely first; stop once the mass reaches top_p
            nucleus.append(i)
            mass += w[i] / total
            if mass >= top_p:
                break
        w = {i: w[i] for i in nucleus}
    total = sum(w.values())
    p = torch.zeros(len(z), dtype=torch.float64)
    for i, wi in w.items():
        p[i] = wi / total
    return p


def draw(temperature: float, top_k: int | None = None, top_p: float | None = None, seed: int = 0) -> torch.Tensor:
    """N draws, one per stream: stream i's uniform number is independent of stream j's."""
    ids = choose(LOGITS.expand(N, V), temperature, top_k, top_p, seed=seed)
    assert ids.shape == (N,)
    return torch.bincount(ids, minlength=V).double()


def chi2(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """Statistic and degrees of freedom over the categories with non-zero expected probability;
    a draw outside them is an outright failure."""
    support = probs > 0
    assert counts[~support].sum() == 0, f"drew tokens outside the allowed set: {counts.tolist()}"
    expected = probs[support] * counts.sum()
    assert expected.min() >= 5, "test design: too few expected draws per category"
    stat = float(((counts[support] - expected) ** 2 / expected).sum())
    return stat, int(support.sum()) - 1


def assert_fits(counts: torch.Tensor, probs: torch.Tensor) -> None:
    stat, df = chi2(counts, probs)
    assert stat < chi2_critical(df), f"chi2={stat:.1f} > {chi2_critical(df):.1f} (df={df}); counts {counts.tolist()}"


def assert_rejects(counts: torch.Tensor, wrong: torch.Tensor) -> None:
    """Power check: the same draws must not fit a different distribution."""
    support = wrong > 0
    expected = wrong[support] * counts.sum()
    outside = counts[~support].sum() > 0
    stat = float(((counts[support] - expected) ** 2 / expected).sum())
    assert outside or stat > 2 * chi2_critical(max(int(support.sum()) - 1, 1))


@pytest.mark.parametrize("temperature", [0.7, 1.0, 1.7])
def test_temperature_draws_from_softmax_over_t(temperature, engine):
    counts = draw(temperature)
    assert_fits(counts, expected_probs(LOGITS, temperature))
    assert_rejects(counts, expected_probs(LOGITS, temperature * 1.3))


@pytest.mark.parametrize("k", [2, 4, 7])
def test_top_k_draws_from_the_renormalised_top_k(k, engine):
    counts = draw(0.8, top_k=k)
    probs = expected_probs(LOGITS, 0.8, top_k=k)
    assert int((probs > 0).sum()) == k
    assert_fits(counts, probs)
    assert_rejects(counts, expected_probs(LOGITS, 0.8, top_k=k + 1))
    assert_rejects(counts, expected_probs(LOGITS, 0.8))


@pytest.mark.parametrize("p", [0.5, 0.8, 0.95])
def test_top_p_draws_from_the_renormalised_nucleus(p, engine):
    temperature = 1.2
    probs = expected_probs(LOGITS, temperature, top_p=p)
    # Test design: the nucleus boundary is not within float error of p.
    full = expected_probs(LOGITS, temperature)
    cum = torch.cumsum(torch.sort(full, descending=True).values, 0)
    assert (cum - p).abs().min() > 1e-3
    counts = draw(temperature, top_p=p)
    assert_fits(counts, probs)
    assert_rejects(counts, full)


def test_top_k_and_top_p_together(engine):
    """top-k first, then the nucleus of the renormalised top-k distribution."""
    temperature, k, p = 1.0, 5, 0.7
    probs = expected_probs(LOGITS, temperature, top_k=k, top_p=p)
    counts = draw(temperature, top_k=k, top_p=p)
    assert_fits(counts, probs)
    assert_rejects(counts, expected_probs(LOGITS, temperature, top_k=k))


def test_rows_are_drawn_from_their_own_logits(engine):
    """A batch of different rows: each row follows its own distribution."""
    other = LOGITS.flip(0)
    logits = torch.cat([LOGITS.expand(N, V), other.expand(N, V)])
    ids = choose(logits, 1.0, top_k=6, seed=3)
    for half, row in ((ids[:N], LOGITS), (ids[N:], other)):
        assert_fits(torch.bincount(half, minlength=V).double(), expected_probs(row, 1.0, top_k=6))


def test_successive_steps_draw_independently(engine):
    """One stream over many steps (as generation draws) follows the distribution too."""
    from charrnn.config import SampleConfig
    from charrnn.sampling.decode import Chooser

    chooser = Chooser(SampleConfig(temperature=1.0, seed=11))
    ids = torch.cat([chooser(LOGITS[None]) for _ in range(4000)])
    counts = torch.bincount(ids, minlength=V).double()
    assert_fits(counts, expected_probs(LOGITS, 1.0))
    assert_rejects(counts, expected_probs(LOGITS, 1.3))
