"""The prepared data folder's windows: a seeded permutation per epoch, fixed or aligned to documents, and each step's
windows dealt to ranks so that any split of processes and micro-steps trains on the same set."""
import numpy as np

from dataloader import TrainLoader, read_windows, window_ids, window_starts


def test_windows_are_a_permutation_per_epoch():
    ids = window_ids(0, 30, 10, seed=7)
    for epoch in range(3):
        assert sorted(ids[10 * epoch:10 * epoch + 10]) == list(range(10))
    assert list(ids[:10]) != list(ids[10:20])
    assert list(window_ids(13, 9, 10, seed=7)) == list(ids[13:22])  # any slice of the same stream


def test_window_starts_fixed_and_aligned_to_documents():
    E = 9  # <|endoftext|>: documents of 5, 2 and 7 tokens, then one of 3
    tokens = np.array([1, 2, 3, 4, E, 5, E, 1, 2, 3, 4, 5, 6, E, 7, 8, E], dtype=np.uint16)
    assert list(window_starts(tokens, 3)) == [0, 3, 6, 9, 12]  # (17 - 1) // 3 windows, every 3 tokens
    # each document: its preceding <|endoftext|> (the stream's start for the first), then every 3 tokens
    # inside it; a window needs 4 tokens, so none starts after offset 13
    assert list(window_starts(tokens, 3, eot=E)) == [0, 3, 4, 6, 9, 12, 13]
    x, y = read_windows(tokens, window_starts(tokens, 3, eot=E)[[1, 3]], 3)
    assert x.tolist() == [[4, E, 5], [E, 1, 2]] and y.tolist() == [[E, 5, E], [1, 2, 3]]
    assert len(window_starts(tokens[:4], 3, eot=E)) == 0  # no document end: nothing to align to


def step_batches(loader):
    batches = loader.read_step()
    loader.advance()
    return batches


def test_loader_deals_each_steps_windows_the_same_for_any_split_of_ranks_and_micro_steps():
    tokens = np.arange(1000, dtype=np.uint16)
    one = TrainLoader(tokens, block=8, batch_size=3, micro_steps=4, seed=5)
    ranks = [TrainLoader(tokens, block=8, batch_size=3, micro_steps=4, seed=5, rank=r, world=2) for r in (0, 1)]
    for _ in range(30):  # past one epoch (124 windows, 12 a step)
        whole = [x for x, _ in step_batches(one)]
        split = [[x for x, _ in step_batches(loader)] for loader in ranks]
        # micro-batch m of rank r is the stream's (m * world + r)-th: rank 0 gets 0 and 2, rank 1 gets 1 and 3
        assert [b.tolist() for b in whole] == [b.tolist() for b in (split[0][0], split[1][0], split[0][1], split[1][1])]
    assert one.state_dict() == {'windows_seen': 360, 'seed': 5, 'block_size': 8, 'align_windows': False}
    resumed = TrainLoader(tokens, block=8, batch_size=3, micro_steps=4, seed=5)
    resumed.load_state_dict(one.state_dict())
    assert [x.tolist() for x, _ in step_batches(resumed)] == [x.tolist() for x, _ in step_batches(one)]
