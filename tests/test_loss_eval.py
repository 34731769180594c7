"""Val loss, perplexity and bits per byte (loss_eval.py)."""
import math

import pytest
import torch

from loss_eval import bits_per_byte, loss_sums


def test_bits_per_byte_hand_computed():
    token_bytes = torch.tensor([1, 2, 3, 0])  # token 3 is <|endoftext|>: no bytes
    nats = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    targets = torch.tensor([[0, 3], [2, 1]])
    total, count, on_text, text_bytes = loss_sums(nats, targets, token_bytes).tolist()
    assert (total, count, on_text, text_bytes) == (10.0, 4.0, 1.0 + 3.0 + 4.0, 1 + 3 + 2)
    assert bits_per_byte(on_text, text_bytes) == pytest.approx(8.0 / (math.log(2) * 6))
