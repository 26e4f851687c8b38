"""The few statistics the learner and the A/B report need, written out (no scipy): Wilson
intervals, a segment-stratified difference of win rates, and an always-valid (mSPRT) test and
confidence sequence for a difference of conversions, so that looking at an A/B test after
every batch of calls does not inflate its error rate."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials ((0, 1) for n = 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Lift:
    diff: float  # standardised win rate of the move minus the reference's
    lo: float
    hi: float
    n_move: int
    n_ref: int
    strata: int  # strata where both were seen (only those count)


def stratified_lift(rows: Iterable[tuple[str, str, bool]], move: str, ref: str, z: float = Z95) -> Lift | None:
    """Difference of win rates move − ref, controlling for the strata (lead segment × source):
    within each stratum where both were used, the difference of the two rates; then their
    average weighted by the stratum's size (direct standardisation).  Variance: the weighted
    sum of the per-stratum binomial variances (rates shrunk by +0.5/+1 so that 0 % and 100 %
    strata do not claim certainty).  None when no stratum has both."""
    cells: dict[str, list[int]] = {}
    for stratum, act, win in rows:
        if act not in (move, ref):
            continue
        c = cells.setdefault(stratum, [0, 0, 0, 0])  # n_move, k_move, n_ref, k_ref
        i = 0 if act == move else 2
        c[i] += 1
        c[i + 1] += int(win)
    both = {s: c for s, c in cells.items() if c[0] and c[2]}
    if not both:
        return None
    total = sum(c[0] + c[2] for c in both.values())
    diff = var = 0.0
    for n1, k1, n0, k0 in both.values():
        w = (n1 + n0) / total
        p1, p0 = k1 / n1, k0 / n0
        s1, s0 = (k1 + 0.5) / (n1 + 1), (k0 + 0.5) / (n0 + 1)
        diff += w * (p1 - p0)
        var += w * w * (s1 * (1 - s1) / n1 + s0 * (1 - s0) / n0)
    half = z * math.sqrt(var)
    return Lift(diff, diff - half, diff + half, sum(c[0] for c in both.values()), sum(c[2] for c in both.values()),
                len(both))


# --- sequential test for an A/B campaign --------------------------------------------------------


@dataclass(frozen=True)
class Sequential:
    diff: float  # B − A conversion
    fixed_lo: float  # the ordinary 95 % interval (valid only for one look at a fixed n)
    fixed_hi: float
    cs_lo: float  # the always-valid 1 − alpha confidence sequence at this look
    cs_hi: float
    mlr: float  # mSPRT mixture likelihood ratio; reject "no difference" once it reaches 1/alpha
    reject: bool


def msprt(k_a: int, n_a: int, k_b: int, n_b: int, alpha: float = 0.05, tau: float = 0.05) -> Sequential:
    """Mixture SPRT for the difference of two conversion rates (normal approximation with the
    plug-in variance, mixing distribution N(0, tau²) on the difference; Johari, Pekelis & Walsh,
    "Always valid inference", 2017).  The confidence sequence is the set of differences the test
    would not reject; it holds at every look at once, so the campaign may stop the first time it
    excludes zero."""
    pa = k_a / n_a if n_a else 0.0
    pb = k_b / n_b if n_b else 0.0
    diff = pb - pa
    # plug-in variance with a floor (a 0 % arm early on must not look certain)
    sa, sb = (k_a + 0.5) / (n_a + 1), (k_b + 0.5) / (n_b + 1)
    v = sa * (1 - sa) / max(n_a, 1) + sb * (1 - sb) / max(n_b, 1)
    t2 = tau * tau
    mlr = math.sqrt(v / (v + t2)) * math.exp(t2 * diff * diff / (2 * v * (v + t2)))
    half = math.sqrt(v * (v + t2) / t2 * (math.log((v + t2) / v) + 2 * math.log(1 / alpha)))
    fixed = Z95 * math.sqrt(v)
    return Sequential(diff, diff - fixed, diff + fixed, diff - half, diff + half, mlr, mlr >= 1 / alpha)


__all__ = ["Lift", "Sequential", "Z95", "msprt", "stratified_lift", "wilson"]
