"""
Statistics that can tell two models apart, from lm-evaluation-harness's per-question results
(simple_evaluate(..., log_samples=True)['samples'][task]: one dict per question with its doc_id, its 0/1 'acc' and
the hashes of its document, prompt and target).

- accuracy_record: a task's accuracy with its standard error and a 95% interval. The standard error is lm-eval's
  own (mean_stderr: the sample standard deviation over sqrt(n)), for 0/1 scores sqrt(p(1-p)/(n-1)); the interval is
  the normal one, accuracy +- 1.96 standard errors, clipped to [0, 1]. mean_record: the same for any mean (eval_suite's
  bits per byte: not a rate, clipped at 0 only).
- compare_task: model A minus model B on the same questions, paired: each bootstrap resample draws n of the
  questions with replacement and takes the mean of A's score minus B's on them; the 95% interval is the 2.5th and
  97.5th percentiles of 10,000 such means (numpy's default_rng(seed), resample r = rng.integers(0, n, n), the r-th
  draw: the same seed gives the same interval). Pairing removes the questions' own difficulty from the noise, which
  two separate intervals would keep: a difference can be significant while the two intervals overlap.
  A is better (worse) where the interval lies above (below) 0, else the two are tied; for a figure where lower is
  better (bits per byte: higher_is_better=False) A is better where the interval lies below 0.
- summary_line: "better on k, tied on m, worse on n tasks"; task_label: a task's name with what its figure is.

Questions pair by doc_id; a pair whose document, prompt or answer differ (lm-eval's doc_hash, prompt_hash,
target_hash) is refused: the two runs did not ask the same questions. The prompt is text, so models with different
tokenizers compare.
"""
import math

import numpy as np

Z95 = 1.959963984540054  # the normal quantile of 0.975
RESAMPLES = 10_000
SEED = 0
HASHES = ('doc_hash', 'prompt_hash', 'target_hash')


def stderr_of_mean(scores):
    """lm-eval's standard error of a mean metric (mean_stderr): sample standard deviation (n - 1) over sqrt(n); for
    0/1 scores sqrt(p(1-p)/(n-1)). None for fewer than 2 scores, where lm-eval reports 'N/A'."""
    n = len(scores)
    if n < 2:
        return None
    mean = sum(scores) / n
    return math.sqrt(sum((x - mean)**2 for x in scores) / (n - 1)) / math.sqrt(n)  # lm-eval's order of operations


def mean_record(task, model, scores, metric, bounds=(0.0, 1.0)):
    """One task and model's JSON record of a mean: n, the value, its standard error, the 95% interval (normal, clipped
    to `bounds`; None: that side unbounded)."""
    if not scores:
        raise ValueError(f'{task}: no {metric} results from {model}')
    value, stderr = sum(scores) / len(scores), stderr_of_mean(scores)
    low = high = None
    if stderr is not None:  # None: one question
        low, high = value - Z95 * stderr, value + Z95 * stderr
        low, high = low if bounds[0] is None else max(bounds[0], low), high if bounds[1] is None else min(
            bounds[1], high)
    return {
        'task': task, 'model': model, 'metric': metric, 'n': len(scores), 'value': value, 'stderr': stderr,
        'ci_low': low, 'ci_high': high
    }


def accuracy_record(task, model, samples, metric='acc'):
    """mean_record of lm-eval's per-question 0/1 scores, the rate also under 'accuracy'."""
    record = mean_record(task, model, [float(s[metric]) for s in samples], metric)
    return {**record, 'accuracy': record['value']}


def by_doc_id(samples, task, who):
    """{doc_id: sample}; ValueError if a doc_id comes twice (lm-eval's `samples=` with unsorted indices mislabels)."""
    items = {}
    for s in samples:
        if s['doc_id'] in items:
            raise ValueError(f'{task}: question {s["doc_id"]} comes twice in the results of {who}')
        items[s['doc_id']] = s
    return items


def paired_scores(samples_a, samples_b, task, metric='acc', names=('A', 'B')):
    """Both models' scores on the same questions, in doc_id order. ValueError (one line) unless both answered the
    same questions with the same prompt and answer."""
    a, b = by_doc_id(samples_a, task, names[0]), by_doc_id(samples_b, task, names[1])
    if a.keys() != b.keys():
        only_a, only_b = len(a.keys() - b.keys()), len(b.keys() - a.keys())
        raise ValueError(
            f'{task}: the two runs asked different questions ({only_a} only in {names[0]}, {only_b} only in '
            f'{names[1]}): compare runs with the same data and --limit')
    ids = sorted(a)
    for doc_id in ids:
        differ = [h for h in HASHES if h in a[doc_id] and h in b[doc_id] and a[doc_id][h] != b[doc_id][h]]
        if differ:
            raise ValueError(
                f'{task}: question {doc_id} differs between the two runs ({", ".join(differ)}): compare runs '
                'with the same data, prompt and number of shots')
    return [float(a[i][metric]) for i in ids], [float(b[i][metric]) for i in ids]


def paired_bootstrap(scores_a, scores_b, resamples=RESAMPLES, seed=SEED):
    """(mean of a - b, the 2.5th and 97.5th percentiles of its paired bootstrap). One generator call per resample,
    rng.integers(0, n, n), so that the stream is the documented one (the test redraws it in plain Python)."""
    if not len(scores_a) == len(scores_b) > 0:
        raise ValueError(f'paired bootstrap: {len(scores_a)} and {len(scores_b)} scores; expected the same number, > 0')
    differences = np.asarray(scores_a, dtype=float) - np.asarray(scores_b, dtype=float)
    n = len(differences)
    rng = np.random.default_rng(seed)
    means = np.array([differences[rng.integers(0, n, n)].mean() for _ in range(resamples)])
    low, high = np.percentile(means, [2.5, 97.5])
    return float(differences.mean()), float(low), float(high)


def verdict(low, high, higher_is_better=True):
    """'better' (the interval of A - B above 0; below it where lower is better), 'worse' (the other side) or 'tied'
    (it holds 0)."""
    if not higher_is_better:
        low, high = -high, -low
    return 'better' if low > 0 else 'worse' if high < 0 else 'tied'


def compare_task(task, samples_a, samples_b, names=('A', 'B'), metric='acc', higher_is_better=True, resamples=RESAMPLES,
                 seed=SEED):
    """Model A (names[0]) against model B on one task's questions: the JSON record of the paired comparison (value and
    base_value: each model's mean on the questions both answered; accuracy and base_accuracy as well for a rate)."""
    a, b = paired_scores(samples_a, samples_b, task, metric, names)
    difference, low, high = paired_bootstrap(a, b, resamples, seed)
    said = verdict(low, high, higher_is_better)
    record = {
        'task': task, 'metric': metric, 'model': names[0], 'base': names[1], 'n': len(a), 'value': sum(a) / len(a),
        'base_value': sum(b) / len(b), 'difference': difference, 'ci_low': low, 'ci_high': high,
        'higher_is_better': higher_is_better, 'significant': said != 'tied', 'verdict': said, 'resamples': resamples,
        'seed': seed
    }
    if higher_is_better:
        record.update(accuracy=record['value'], base_accuracy=record['base_value'])
    return record


def summary_line(comparisons):
    """'better on k, tied on m, worse on n tasks' over compare_task's records."""
    count = {v: sum(c['verdict'] == v for c in comparisons) for v in ('better', 'tied', 'worse')}
    return f"better on {count['better']}, tied on {count['tied']}, worse on {count['worse']} tasks"


def task_label(record):
    """A task's name in a table, with what its figure measures: 'pubmedqa (acc)', 'general_bpb (bits per byte, lower
    is better)'."""
    return f"{record['task']} (bits per byte, lower is better)" if record['metric'] == 'bpb' else \
        f"{record['task']} ({record['metric']})"
