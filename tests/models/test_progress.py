"""Progress bars for compiled loops (models.progress): a loop run in chunks of one compiled
program, its carry donated, moves the bar once per chunk and gives the plain loop's bits."""

import jax
import jax.numpy as jnp
import numpy as np

from genppl.models import TabularLM, progress, sample
from tests.helpers import watch_progress


def test_run_in_chunks_moves_the_bar_per_chunk_and_donates_the_carry(monkeypatch):
    bars = watch_progress(monkeypatch)

    @jax.jit
    def plain(x):  # 10 steps of x -> 1.5 x + step
        return jax.lax.fori_loop(0, 10, lambda i, x: 1.5 * x + i, x)

    @jax.jit
    def until(carry, stop):
        step, x = jax.lax.while_loop(lambda c: c[0] < stop, lambda c: (c[0] + 1, 1.5 * c[1] + c[0]), carry)
        return (step, x), step + 0

    advance = jax.jit(until, donate_argnums=0)
    (steps, x), markers = progress.run_in_chunks(advance, (jnp.int32(0), jnp.ones(3)), 10, "test", chunks=4)
    (bar,) = bars
    assert progress.chunk_stops(10, 4) == [3, 6, 9, 10] and [int(m) for m in markers] == [3, 6, 9, 10]
    assert bar.total == 10 and bar.updates == [3, 3, 3, 1] and bar.closed and bar.options["unit"] == "step"
    assert int(steps) == 10 and np.asarray(x).tobytes() == np.asarray(plain(jnp.ones(3))).tobytes()


def test_sample_with_a_bar_gives_the_same_samples(monkeypatch):
    lm = TabularLM.random(jax.random.key(7), vocab_size=4, max_len=6, eos_id=0)
    quiet = sample(lm, [1], 16, 6, key=jax.random.key(2))
    bars = watch_progress(monkeypatch)
    key = jax.random.key(2)
    shown = sample(lm, [1], 16, 6, key=key)
    (bar,) = bars
    assert bar.total == 6 and bar.closed and bar.options["unit"] == "token" and bar.n == 6
    assert (shown.token_ids == quiet.token_ids).all() and (shown.num_tokens == quiet.num_tokens).all()
    assert shown.log_probs.tobytes() == quiet.log_probs.tobytes()
    assert int(jax.random.key_data(key)[1]) == 2       # the caller's key survives the donated loop
    sample(lm, [1], 16, 6, key=2, progress=False)
    assert len(bars) == 1                                # progress=False: no bar


def test_distinct_copies_an_array_held_twice():
    zeros = jnp.zeros(3)
    other = jnp.ones(2)
    a, b, c = progress.distinct((zeros, zeros, other))
    assert a is zeros and c is other and b is not zeros and (np.asarray(b) == 0).all()
