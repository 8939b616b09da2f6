"""Bytes moved by resampling, counted from the genealogy (pure numpy: no compilation)."""

import numpy as np

from genppl import distributed


def test_bytes_moved_counts_particles_whose_ancestor_lives_on_another_device():
    # 8 particles on 4 devices (2 each); step 0 keeps everyone home, step 1 copies particle 0
    # everywhere (6 of 8 slots are on other devices), step 2 swaps the two halves
    ancestors = np.array([[0, 1, 2, 3, 4, 5, 6, 7],
                          [0, 0, 0, 0, 0, 0, 0, 0],
                          [4, 5, 6, 7, 0, 1, 2, 3]])
    np.testing.assert_array_equal(distributed.bytes_moved(ancestors, 4, particle_bytes=10), [0, 60, 80])
    np.testing.assert_array_equal(distributed.bytes_moved(ancestors, 1, particle_bytes=10), [0, 0, 0])
    # on 2 devices (4 each) the swap moves all 8, the collapse onto particle 0 moves 4
    np.testing.assert_array_equal(distributed.bytes_moved(ancestors, 2, particle_bytes=1), [0, 4, 8])


def test_layout_reports_mesh_and_collective_volume():
    mesh = distributed.make_mesh(4)
    ancestors = np.array([[0, 0, 0, 0, 0, 0, 0, 0], [0, 1, 2, 3, 4, 5, 6, 7]])
    layout = distributed.layout_of(mesh, 800, "particles", "global", ancestors, 10, np.array([True, False]))
    assert layout.mesh_shape == {"data": 4, "model": 1} and layout.devices == 4
    assert layout.state_bytes_per_device == 200
    assert layout.bytes_moved == 60 and list(layout.bytes_moved_per_step) == [60, 0]
    assert layout.collective_bytes == 3 * 8 * 10  # one all-gather: (D - 1) * n * bytes per particle
    island = distributed.layout_of(mesh, 800, "particles", "island", np.tile(np.arange(8), (2, 1)), 10,
                                   np.array([True, False]))
    assert island.bytes_moved == island.collective_bytes == 0
    assert distributed.layout_of(None, 800) is None
