"""scripts/train_default_model.py: packing documents into rows, with the questions out of the loss."""

import importlib.util
from pathlib import Path

import numpy as np

_PATH = Path(__file__).resolve().parents[2] / "scripts" / "train_default_model.py"
_spec = importlib.util.spec_from_file_location("train_default_model", _PATH)
train = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train)


def test_pack_leaves_the_skipped_tokens_of_each_document_out_of_the_loss():
    docs = [[11, 12, 13, 14], [21, 22, 23], [31, 32, 33, 34, 35], [41, 42]]
    skip = [2, 0, 3, 1]
    tokens, mask = train.pack(docs, 9, eot=0, skip=skip)
    plain_tokens, plain_mask = train.pack(docs, 9, eot=0)
    np.testing.assert_array_equal(tokens, plain_tokens)  # skipping changes only the mask
    # the targets left out are exactly the first skip[d] tokens of each document
    dropped = {(int(tokens[r, t + 1]), t) for r, t in zip(*np.nonzero(plain_mask - mask))}
    assert sorted(tok for tok, _ in dropped) == [11, 12, 31, 32, 33, 41]
    kept = {int(tokens[r, t + 1]) for r, t in zip(*np.nonzero(mask))}
    assert {13, 14, 21, 22, 23, 34, 35, 42, 0} == kept
