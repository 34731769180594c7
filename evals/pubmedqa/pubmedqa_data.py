"""The local PubMedQA data for pubmedqa_local.yaml (lm-evaluation-harness loads this file by its path)."""
import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
LABELS = ('yes', 'no', 'maybe')


def find_pubmedqa(given=None):
    """The folder with ori_pqal.json and test_ground_truth.json: `given`, else $PUBMEDQA_DIR, data/pubmedqa or
    ../shared/data/pubmedqa beside the checkout, whichever has them first."""
    places = [given] if given else [
        os.environ.get('PUBMEDQA_DIR'), REPO / 'data' / 'pubmedqa', REPO.parent / 'shared' / 'data' / 'pubmedqa'
    ]
    for folder in places:
        if folder and (Path(folder) / 'ori_pqal.json').is_file() and (Path(folder) /
                                                                      'test_ground_truth.json').is_file():
            return Path(folder)
    where = given or 'data/pubmedqa/'
    raise FileNotFoundError(
        f'PubMedQA not found in {where}: put ori_pqal.json and test_ground_truth.json '
        '(github.com/pubmedqa/pubmedqa, data/) there, or pass its folder (--pubmedqa=DIR, $PUBMEDQA_DIR)')


def read_json_object(path):
    try:
        data = json.loads(Path(path).read_text(encoding='utf-8'))
    except (OSError, ValueError) as e:  # ValueError: not UTF-8, or not (whole) JSON
        raise ValueError(f'{path}: not readable JSON ({type(e).__name__}: {e})')
    if not isinstance(data, dict):
        raise ValueError(f'{path}: not a JSON object keyed by PMID')
    return data


def official_test_split(folder):
    """The 500 test instances in the official split's order, each with its PMID, as the fields of the data.
    ValueError naming the file and the PMID where the data is not PubMedQA's."""
    folder = Path(folder)
    labelled, truth = read_json_object(folder / 'ori_pqal.json'), read_json_object(folder / 'test_ground_truth.json')
    rows = []
    for pmid, label in truth.items():
        item = labelled.get(pmid)
        if not isinstance(item, dict) or not isinstance(item.get('QUESTION'), str) \
                or not isinstance(item.get('CONTEXTS'), list) \
                or not all(isinstance(c, str) for c in item['CONTEXTS']):
            raise ValueError(
                f'{folder / "ori_pqal.json"}: no question (QUESTION and CONTEXTS) for the test PMID {pmid}')
        if label not in LABELS:
            raise ValueError(f'{folder / "test_ground_truth.json"}: PMID {pmid} is labelled {label!r}; expected one of '
                             f'{", ".join(LABELS)}')
        rows.append({'pmid': pmid, **item, 'final_decision': label})
    if not rows:
        raise ValueError(f'{folder / "test_ground_truth.json"}: no test PMIDs in it')
    return rows


def spread_subset(rows, n):
    """n of the rows spread evenly over them (0 = all). The official test file is sorted by label (276 'yes', then
    'no', then 'maybe'): its first n would all be 'yes', so a subset takes every (len/n)-th one, keeping the mix."""
    return [rows[i * len(rows) // n] for i in range(n)] if 0 < n < len(rows) else rows


def load_pubmedqa(pubmedqa_dir=None, questions=0, **_):
    """The test split as lm-eval's dataset; `questions` > 0: that many, spread over it (spread_subset)."""
    import datasets
    rows = spread_subset(official_test_split(find_pubmedqa(pubmedqa_dir)), int(questions))
    keep = ('pmid', 'QUESTION', 'CONTEXTS', 'final_decision')
    return datasets.DatasetDict({'test': datasets.Dataset.from_list([{k: r[k] for k in keep} for r in rows])})


def doc_to_text(doc):
    """lm-evaluation-harness's pubmedqa prompt, to the character."""
    return 'Abstract: {}\nQuestion: {}\nAnswer:'.format('\n'.join(doc['CONTEXTS']), doc['QUESTION'])
