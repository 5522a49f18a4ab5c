import numpy as np

from sid_index.rqkmeans import rq_kmeans


def blobs(n=600, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(12, d)) * 4
    return (centers[rng.integers(0, 12, n)] + rng.normal(size=(n, d))).astype(np.float32)


def test_deterministic_for_a_seed():
    x = blobs()
    a, b = rq_kmeans(x, [8, 8, 4], seed=3), rq_kmeans(x, [8, 8, 4], seed=3)
    assert np.array_equal(a.codes, b.codes)
    assert not np.array_equal(a.codes, rq_kmeans(x, [8, 8, 4], seed=4).codes)


def test_residual_levels_reduce_error_and_reconstruct():
    x = blobs()
    r = rq_kmeans(x, [8, 8, 8], seed=0)
    assert r.codes.shape == (600, 3) and r.codes.dtype == np.int32
    assert r.recon_mse[0] > r.recon_mse[1] > r.recon_mse[2]
    assert r.recon_mse[0] < r.data_energy
    # recon_mse is the mean squared error of the sum of the chosen centroids
    recon = sum(r.centroids[lvl][r.codes[:, lvl]] for lvl in range(3))
    assert np.isclose(np.mean(np.sum((x - recon) ** 2, 1)), r.recon_mse[-1], rtol=1e-4)


def test_codebook_larger_than_catalog():
    x = blobs(n=20)
    r = rq_kmeans(x, [64, 4, 4])
    assert r.codes[:, 0].max() < 20 and len(r.centroids[0]) == 20
