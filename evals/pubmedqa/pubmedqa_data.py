"""The local PubMedQA data for pubmedqa_local.yaml (lm-evaluation-harness loads this file by its path)."""
import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
LABELS = ('yes', 'no', 'maybe')


def find_pubmedqa(given=None):
    """The folder with ori_pqal.json and test_ground_truth.json: `given`, else $PUBMEDQA_DIR, data/pubmedqa or
    ../shared/data/pubmedqa beside the checkout, whichever has them first."""
    places = [given] if given else [os.environ.get('PUBMEDQA_DIR'), REPO / 'data' / 'pubmedqa',
                                    REPO.parent / 'shared' / 'data' / 'pubmedqa']
    for folder in places:
        if folder and (Path(folder) / 'ori_pqal.json').is_file() and (Path(folder) / 'test_ground_truth.json').is_file():
            return Path(folder)
    where = given or 'data/pubmedqa/'
    raise FileNotFoundError(f'PubMedQA not found in {where}: put ori_pqal.json and test_ground_truth.json '
                            '(github.com/pubmedqa/pubmedqa, data/) there, or pass its folder (--pubmedqa=DIR, $PUBMEDQA_DIR)')


def official_test_split(folder):
    """The 500 test instances in the official split's order, each with its PMID, as the fields of the data."""
    folder = Path(folder)
    labelled = json.loads((folder / 'ori_pqal.json').read_text())
    truth = json.loads((folder / 'test_ground_truth.json').read_text())
    return [{'pmid': pmid, **labelled[pmid], 'final_decision': truth[pmid]} for pmid in truth]


def load_pubmedqa(pubmedqa_dir=None, **_):
    import datasets
    rows = official_test_split(find_pubmedqa(pubmedqa_dir))
    keep = ('pmid', 'QUESTION', 'CONTEXTS', 'final_decision')
    return datasets.DatasetDict({'test': datasets.Dataset.from_list([{k: r[k] for k in keep} for r in rows])})


def doc_to_text(doc):
    """lm-evaluation-harness's pubmedqa prompt, to the character."""
    return 'Abstract: {}\nQuestion: {}\nAnswer:'.format('\n'.join(doc['CONTEXTS']), doc['QUESTION'])
