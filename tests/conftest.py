import os

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


def make_blobs(n_samples=3000, n_features=3, n_components=4, seed=0, spread=4.0):
    """Gaussian blobs with known means, anisotropic covariances and labels."""
    rng = np.random.RandomState(seed)
    means = rng.uniform(-spread, spread, size=(n_components, n_features))
    weights = rng.dirichlet(np.full(n_components, 5.0))
    labels = rng.choice(n_components, size=n_samples, p=weights)
    X = np.empty((n_samples, n_features))
    for k in range(n_components):
        a = rng.normal(scale=0.5, size=(n_features, n_features))
        cov = a @ a.T + 0.2 * np.eye(n_features)
        rows = labels == k
        X[rows] = rng.multivariate_normal(means[k], cov, size=int(rows.sum()))
    return X, labels, means


@pytest.fixture(scope="session")
def blobs():
    return make_blobs()


@pytest.fixture(scope="session")
def image_pixels():
    """Real photo pixels: skimage's astronaut, 8-bit, as float64 in [0, 1]."""
    from skimage import data, transform, util

    img = transform.resize(data.astronaut(), (128, 128), anti_aliasing=True)
    return util.img_as_ubyte(img).reshape(-1, 3).astype(np.float64) / 255.0
