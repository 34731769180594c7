"""eval_stats.py: the standard error is lm-eval's, the paired bootstrap interval is the one a plain-Python redraw of
the same resamples gives, constructed cases give their known verdicts, and runs on other questions are refused."""
import math

import numpy as np
import pytest

from eval_stats import (accuracy_record, compare_task, paired_bootstrap, paired_scores, stderr_of_mean, summary_line,
                        verdict)

# two models on 57 questions: A right on 38, B on 30; they differ on 16 (A alone right on 12, B alone on 4)
A = [1] * 26 + [1] * 12 + [0] * 4 + [0] * 15
B = [1] * 26 + [0] * 12 + [1] * 4 + [0] * 15


def samples(scores, first_id=0, change=None):
    """lm-eval's per-question records as simple_evaluate logs them (the fields eval_stats reads)."""
    return [{
        'doc_id': first_id + i, 'acc': float(s), 'doc_hash': f'd{first_id + i}', 'prompt_hash': f'p{first_id + i}',
        'target_hash': 't', **(change or {}).get(first_id + i, {})
    } for i, s in enumerate(scores)]


def percentile(sorted_values, q):
    """numpy's default ('linear') percentile, by hand: interpolate at position q/100 * (n - 1)."""
    position = q / 100 * (len(sorted_values) - 1)
    below = math.floor(position)
    above = min(below + 1, len(sorted_values) - 1)
    return sorted_values[below] + (position - below) * (sorted_values[above] - sorted_values[below])


def test_the_paired_bootstrap_is_the_interval_a_plain_python_redraw_gives():
    difference, low, high = paired_bootstrap(A, B, resamples=2000, seed=7)
    rng, n, means = np.random.default_rng(7), len(A), []
    for _ in range(2000):
        drawn = [int(i) for i in rng.integers(0, n, n)]
        means.append(sum(A[i] - B[i] for i in drawn) / n)
    means.sort()
    assert difference == pytest.approx(8 / 57)
    assert (low, high) == pytest.approx((percentile(means, 2.5), percentile(means, 97.5)), abs=1e-12)
    # the same seed gives the same interval; the default 10,000 resamples land near the normal approximation of
    # the paired difference (sd of A-B over sqrt(n)), which a hand computation gives: 8/57 +- 1.96 * 0.0680
    assert paired_bootstrap(A, B, resamples=2000, seed=7) == (difference, low, high)
    d = [a - b for a, b in zip(A, B)]
    sd = math.sqrt(sum((x - 8 / 57)**2 for x in d) / n / n)
    _, low, high = paired_bootstrap(A, B)
    assert low == pytest.approx(8 / 57 - 1.96 * sd, abs=0.015) and high == pytest.approx(8 / 57 + 1.96 * sd, abs=0.015)


def test_identical_models_are_tied_with_the_interval_zero_and_one_always_right_is_better():
    same = compare_task('t', samples(A), samples(A))
    assert (same['difference'], same['ci_low'], same['ci_high']) == (0.0, 0.0, 0.0)
    assert same['verdict'] == 'tied' and not same['significant']
    better = compare_task('t', samples([1] * 30), samples([0] * 30))
    assert (better['difference'], better['ci_low'], better['ci_high'], better['verdict']) == (1.0, 1.0, 1.0, 'better')
    worse = compare_task('t', samples([0] * 30), samples([1] * 30), names=('tuned', 'base'))
    assert (worse['difference'], worse['verdict'], worse['model'], worse['base']) == (-1.0, 'worse', 'tuned', 'base')
    assert summary_line([same, better, worse, same]) == 'better on 1, tied on 2, worse on 1 tasks'
    b_against_a = compare_task('t', samples(B), samples(A))
    assert b_against_a['difference'] == pytest.approx(-8 / 57) and b_against_a['n'] == 57
    assert b_against_a['verdict'] == verdict(b_against_a['ci_low'], b_against_a['ci_high'])


def test_the_summary_line_counts_the_verdicts():
    records = [{'verdict': v} for v in ('better', 'tied', 'tied', 'worse', 'tied')]
    assert summary_line(records) == 'better on 1, tied on 3, worse on 1 tasks'


def test_the_standard_error_is_lm_evals_and_sqrt_p_one_minus_p_over_n_minus_one():
    from lm_eval.api.metrics import mean_stderr
    record = accuracy_record('t', 'm', samples(A))
    p, n = 38 / 57, 57
    assert record['stderr'] == mean_stderr([float(x) for x in A])
    assert record['stderr'] == pytest.approx(math.sqrt(p * (1 - p) / (n - 1)), rel=1e-12)
    assert (record['ci_low'], record['ci_high']) == pytest.approx(
        (p - 1.959964 * record['stderr'], p + 1.959964 * record['stderr']))
    assert accuracy_record('t', 'm', samples([1] * 10))['ci_high'] == 1.0  # clipped (and 0 wide: all right)
    assert stderr_of_mean([1.0]) is None  # lm-eval: 'N/A'


def test_runs_that_did_not_ask_the_same_questions_are_refused_in_one_line():
    with pytest.raises(ValueError) as e:
        paired_scores(samples(A), samples(A[:50]), 'mmlu_anatomy', names=('tuned', 'base'))
    assert str(e.value) == ('mmlu_anatomy: the two runs asked different questions (7 only in tuned, 0 only in base): '
                            'compare runs with the same data and --limit')
    with pytest.raises(ValueError, match=r'^medmcqa: question 3 differs between the two runs \(prompt_hash\)'):
        paired_scores(samples(A), samples(A, change={3: {'prompt_hash': 'other'}}), 'medmcqa')
    with pytest.raises(ValueError, match='question 0 comes twice'):
        paired_scores(samples(A) + samples([1]), samples(A), 't')


def test_pairs_follow_doc_ids_not_the_order_of_the_lists():
    a, b = samples(A), samples(B)
    assert paired_scores(a[::-1], b, 't') == ([float(x) for x in A], [float(x) for x in B])


def test_where_lower_is_better_an_interval_below_zero_is_better():
    assert [verdict(-0.3, -0.1, False), verdict(0.1, 0.3, False), verdict(-0.1, 0.1, False)] == \
        ['better', 'worse', 'tied']
    fewer_bits = compare_task('general_bpb', samples([0.9] * 5 + [1.0] * 5), samples([1.1] * 10), metric='acc',
                              higher_is_better=False)
    assert fewer_bits['verdict'] == 'better' and 'accuracy' not in fewer_bits and fewer_bits['value'] == 0.95
