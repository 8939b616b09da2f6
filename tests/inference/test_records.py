"""Run records: save -> load -> replay is bit-identical; other versions, another checkpoint or
another program are refused naming the difference; a changed output is a mismatch."""

import jax
import numpy as np
import pytest

from genppl import inference, models, ppl
from genppl.inference import records, smc


from tests.inference.conftest import KERNEL


@pytest.fixture
def program(tabular_program):
    return tabular_program


@pytest.fixture
def result(tabular_run):
    return tabular_run


@pytest.fixture
def saved(result, tmp_path):
    path = tmp_path / "run.npz"
    result.save(path, config={"note": "test"})
    return path


def test_save_load_replay_is_bit_identical(result, program, saved):
    record = inference.load(saved)
    assert record.config["note"] == "test" and record.config["n"] == 16
    assert record.versions == records.versions() and record.checkpoint_hash == records.checkpoint_hash(program.lm)
    steps = len(result.ess)
    assert record.arrays["ancestors"].shape == record.arrays["step_log_weights"].shape == (steps, 16)
    assert result.num_resampling > 0 and record.texts == result.texts
    again = inference.replay(record, program=program, kernel=KERNEL)
    assert again.token_ids == result.token_ids
    assert again.log_weights.tobytes() == result.log_weights.tobytes() and again.log_z == result.log_z
    np.testing.assert_array_equal(again.ancestors, result.ancestors)
    assert again.step_log_weights.tobytes() == result.step_log_weights.tobytes()


@pytest.mark.parametrize("field, value, message", [
    ("versions", {"jax": "0.0.1"}, r"other versions.*jax: recorded '0\.0\.1', here"),
    ("versions", {"genppl": "9.9"}, r"genppl: recorded '9\.9'"),
    ("checkpoint_hash", "0" * 64, r"another checkpoint \(checkpoint hash: recorded 0000"),
])
def test_a_record_from_elsewhere_is_refused(program, saved, field, value, message):
    record = inference.load(saved)
    if isinstance(value, dict):
        record.versions.update(value)
    else:
        setattr(record, field, value)
    with pytest.raises(records.RecordError, match=message):
        inference.replay(record, program=program, kernel=KERNEL)


def test_another_program_or_no_program_is_refused(program, saved):
    other = ppl.Program(program.lm, [1], max_new_tokens=6, potential=ppl.BannedTokens([3]))
    with pytest.raises(records.RecordError, match="program differs"):
        inference.replay(saved, program=other, kernel=KERNEL)
    with pytest.raises(records.RecordError, match="needs the program"):
        inference.replay(saved)
    with pytest.raises(records.RecordError, match="kernel differs"):
        inference.replay(saved, program=program)            # recorded with ess_threshold 0.9


def test_a_changed_output_is_a_mismatch(program, saved):
    record = inference.load(saved)
    record.arrays["log_weights"] = np.nextafter(record.arrays["log_weights"], 0)  # one ulp
    with pytest.raises(records.ReplayMismatch, match="log_weights"):
        inference.replay(record, program=program, kernel=KERNEL)
    record = inference.load(saved)
    record.token_ids[0] = record.token_ids[0] + [4]
    with pytest.raises(records.ReplayMismatch, match="tokens"):
        inference.replay(record, program=program, kernel=KERNEL)


def test_samples_record(program, tmp_path):
    out = models.sample(program.lm, [1], 8, 6, key=2, temperature=0.7)
    inference.save(out, tmp_path / "s.npz")
    again = inference.replay(tmp_path / "s.npz", lm=program.lm)
    np.testing.assert_array_equal(again.token_ids, out.token_ids)
    assert again.log_probs.tobytes() == out.log_probs.tobytes()


def test_not_a_record(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"nope")
    with pytest.raises(records.RecordError, match="not a genppl run record"):
        inference.load(tmp_path / "x.npz")
