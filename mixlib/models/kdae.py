"""K-DAE: K auto-encoders deep clustering.

Opochinsky, Chazan, Gannot & Goldberger, "K-Autoencoders Deep Clustering", ICASSP 2020; one of
MixMate's Table 1 baselines, and like MixMate a mixture of auto-encoders whose cluster is the
one that reconstructs a point best. Three stages:

1. an auto-encoder on all the data, k-means on its embedding: the initial clusters;
2. one auto-encoder per cluster, trained on that cluster's points alone;
3. all K trained together on ``mean_i min_k ||x_i - AE_k(x_i)||`` (the Euclidean norm, not its
   square); a point's cluster is the auto-encoder with the smallest reconstruction error.

Defaults follow the authors' Keras code (github.com/yanivopo/K-DAE, ``src/k_dae.py``,
``src/autoencoder.py``, ``src/utils.py``; MNIST and Fashion-MNIST: all 70,000 images divided
by 255):

- every auto-encoder: Keras ``Dense`` layers (Glorot-uniform weights, zero biases), each hidden
  layer followed by batch normalisation (Keras': momentum 0.99, epsilon 1e-3) and ReLU; a linear
  embedding; the decoder's hidden widths are the encoder's first two in reverse
  (``hidden_dim[1::-1]``: for the initial ``500-500-2000-10`` encoder a ``10-500-500`` decoder,
  for the clusters' ``500-100-10`` a ``10-100-500`` one), then a sigmoid output; loss
  ``"binary_crossentropy"`` (mean over features and batch), Adam (Keras' defaults: lr 1e-3,
  epsilon 1e-7), batches of 256 reshuffled every epoch, early stopping when the epoch loss has
  not improved for 10 epochs;
- stage 1: 10 epochs of the ``500-500-2000-10`` auto-encoder, scikit-learn ``KMeans`` with 100
  restarts on its embedding;
- stage 2: ``500-100-10`` auto-encoders, up to 100 epochs each;
- stage 3: 40 epochs of Adam on all K auto-encoders' parameters, batch normalisation in
  training mode; ``labels_`` are the final auto-encoders' assignment (batch normalisation in
  inference mode).

Deviations: torch instead of Keras/TensorFlow; the binary cross-entropy computed from the
sigmoid's input (what TensorFlow's Keras does for a sigmoid output in graph mode); batch means
as matrix products (same labels at any thread count); k-means by
:func:`~mixlib.models.power_kmeans.kmeans_restarts` (thread-invariant, seeded); a last batch of
one row is left out of an epoch (torch's batch normalisation needs two); a cluster with fewer
than two points keeps its untrained auto-encoder. ``random_state`` seeds the weights, the batch
orders and the k-means (the reference seeds nothing).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..utils import torch_generator
from . import data_fingerprint, register
from .base import (
    Progress,
    TorchModel,
    adam,
    call,
    check_array_2d,
    check_init_labels,
    checkpoint_key,
    subnormals_flushed,
)
from .n2d import glorot_uniform_
from .power_kmeans import (
    MKL_CNR,
    _sq_dist_direct,
    as_input,
    batched,
    kmeans_restarts,
    thread_invariant,
)


class KerasBatchNorm(torch.nn.Module):
    """Keras' ``BatchNormalization`` of a 2-D input (momentum 0.99, epsilon 1e-3; the batch's
    biased variance normalises and updates the moving variance, as its non-fused path does),
    its batch means taken as products with a row of ``1 / n``: matrix products are the same
    bits at any thread count under MKL's strict CNR mode, where torch's own batch-norm and
    mean reductions are not."""

    def __init__(self, n_features: int, eps: float = 1e-3, momentum: float = 0.01, device=None):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = torch.nn.Parameter(torch.ones(n_features, device=device))
        self.bias = torch.nn.Parameter(torch.zeros(n_features, device=device))
        self.register_buffer("running_mean", torch.zeros(n_features, device=device))
        self.register_buffer("running_var", torch.ones(n_features, device=device))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.fill_(1.0)
            self.bias.zero_()
            self.running_mean.zero_()
            self.running_var.fill_(1.0)

    def forward(self, x):
        if not self.training:
            scale = self.weight * torch.rsqrt(self.running_var + self.eps)
            return (x - self.running_mean) * scale + self.bias
        row = x.new_full((1, x.shape[0]), 1.0 / x.shape[0])
        mean = (row @ x)[0]
        xc = x - mean
        var = (row @ (xc * xc))[0]
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1.0 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1.0 - m).add_(var.detach(), alpha=m)
        return xc * (self.weight * torch.rsqrt(var + self.eps)) + self.bias


def batch_mean(v: torch.Tensor) -> torch.Tensor:
    """The mean of a 1-D tensor as a matrix product (thread-invariant, see
    :class:`KerasBatchNorm`)."""
    return (v.new_full((1, v.shape[0]), 1.0 / v.shape[0]) @ v)[0]


def bce_with_logits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Keras' ``binary_crossentropy`` of a sigmoid output from its logits, the mean over
    features and batch taken as matrix products (thread-invariant, see
    :class:`KerasBatchNorm`)."""
    loss = torch.clamp_min(logits, 0) - logits * target + torch.log1p(torch.exp(-logits.abs()))
    B, d = loss.shape
    return (loss.new_full((1, B), 1.0 / B) @ loss @ loss.new_full((d, 1), 1.0 / d))[0, 0]


def bn_mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> torch.nn.Sequential:
    """Keras-style ``Dense -> BatchNormalization -> ReLU`` per hidden width, then a linear
    ``out_dim`` layer (built on the meta device; :meth:`BNAutoEncoder.init_` fills it)."""
    layers, prev = [], in_dim
    for h in hidden:
        layers += [
            torch.nn.Linear(prev, h, device="meta"),
            KerasBatchNorm(h, device="meta"),
            torch.nn.ReLU(),
        ]
        prev = h
    layers.append(torch.nn.Linear(prev, out_dim, device="meta"))
    return torch.nn.Sequential(*layers)


class BNAutoEncoder(torch.nn.Module):
    """The reference's auto-encoder: ``Linear -> BatchNorm -> ReLU`` per encoder width but the
    last (the linear embedding), a decoder of the first two widths reversed, a sigmoid output
    (``forward`` returns the logits before it)."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.encoder = bn_mlp(in_dim, hidden[:-1], hidden[-1])
        self.decoder = bn_mlp(hidden[-1], hidden[1::-1], in_dim)

    def init_(self, gen: torch.Generator, device, dtype) -> BNAutoEncoder:
        """Keras' initial state (:func:`keras_init_`)."""
        return keras_init_(self, gen, device, dtype)

    def forward(self, x):
        return self.decoder(self.encoder(x))


def keras_init_(net: torch.nn.Module, gen: torch.Generator, device, dtype):
    """Keras' initial state of a network of :func:`bn_mlp` blocks: Glorot-uniform weights from
    ``gen``, zero biases, batch normalisation's scale 1, shift 0, moving mean 0 and variance 1.
    Returns ``net``."""
    glorot_uniform_(net, gen, device, dtype)
    for m in net.modules():
        if isinstance(m, KerasBatchNorm):
            m.reset_parameters()
    return net


def fit_epochs(
    module: torch.nn.Module,
    loss_of,
    Xt: torch.Tensor,
    gen,
    epochs: int,
    batch_size: int,
    lr: float,
    patience: int | None = None,
    on_epoch=None,
    resume: dict | None = None,
    save=None,
) -> list[float]:
    """Keras' ``fit`` of ``module`` on the rows of ``Xt``, every stage's: Adam over its
    parameters, batches reshuffled every epoch (a last batch of one row left out: batch
    normalisation needs two), the batch loss ``loss_of(xb)``; the epoch loss is the batch losses
    weighted by their sizes. Stopped when it has not improved for ``patience`` epochs (None:
    never); ``on_epoch(epoch, loss)`` after each epoch, the module in inference mode. Returns
    the epoch losses.

    ``save(state, last)``, if given, is called after every epoch with a function returning the
    loop's state (epochs done, losses, early-stopping counters, optimiser) and whether the loop
    ends there; ``resume`` is such a state, from which the loop continues (the module's own
    state and the generator's are the caller's to restore)."""
    N = Xt.shape[0]
    opt = adam(module.parameters(), lr=lr, eps=1e-7)
    losses, best, waited, start, stopped = [], math.inf, 0, 0, False
    if resume is not None:
        opt.load_state_dict(resume["optimizer"])
        losses, best, waited = list(resume["losses"]), resume["best"], resume["waited"]
        start, stopped = resume["epoch"], resume["stopped"]
    for epoch in range(start, epochs):
        if stopped:
            break
        module.train()
        perm = torch.randperm(N, generator=gen).to(Xt.device)
        total = torch.zeros((), dtype=Xt.dtype, device=Xt.device)
        for i in range(0, N, batch_size):
            idx = perm[i : i + batch_size]
            if idx.numel() < 2:
                continue
            loss = loss_of(Xt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * idx.numel()
        module.eval()
        losses.append(float(total) / N)
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"the loss became {losses[-1]} at epoch {epoch + 1}")
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
        if losses[-1] < best:
            best, waited = losses[-1], 0
        else:
            waited += 1
        stopped = patience is not None and waited >= patience
        if save is not None:
            state = {"epoch": epoch + 1, "losses": list(losses), "best": best, "waited": waited,
                     "stopped": stopped}  # fmt: skip
            save(
                lambda s=state: {**s, "optimizer": opt.state_dict()}, stopped or epoch + 1 == epochs
            )
    return losses


def train_autoencoder(
    ae: BNAutoEncoder, Xt: torch.Tensor, gen, epochs, batch_size, patience, lr, on_epoch=None,
    resume=None, save=None,
) -> list[float]:  # fmt: skip
    """An auto-encoder alone on the rows of ``Xt`` (stages 1 and 2): binary cross-entropy of its
    sigmoid output, early stopping (:func:`fit_epochs`)."""

    def loss_of(xb):
        return bce_with_logits(ae(xb), xb)

    return fit_epochs(
        ae, loss_of, Xt, gen, epochs, batch_size, lr, patience, on_epoch, resume, save
    )


_STAGES = ("initial", "cluster", "gate", "joint")


class _Stages:
    """Checkpointing of a K-DAE or DAMIC fit (:class:`~mixlib.models.base.Checkpoint`): where
    the saved fit was (a stage's loop, and for stage 2 which cluster's), and its state there:
    the networks built so far, the loop's state, the generator's, the curves and labels. The fit
    calls :meth:`arrive` at each loop in order: passed loops are skipped, the saved one resumes
    (the generator restored there), later ones run afresh, as they would have."""

    def __init__(self, checkpoint, key: str, gen: torch.Generator, history: dict):
        self.checkpoint, self.key, self.gen, self.history = checkpoint, key, gen, history
        self.modules: dict[str, torch.nn.Module] = {}
        self.labels: dict[str, np.ndarray] = {}
        self.saved = None if checkpoint is None else checkpoint.load(key)
        self.at = (-1, 0)
        if self.saved is not None:
            self.at = (_STAGES.index(self.saved["stage"]), int(self.saved["index"]))
            for k, v in self.saved["history"].items():
                history[k] = list(v)
            self.labels = {k: v.numpy() for k, v in self.saved["labels"].items()}

    def passed(self, stage: str, index: int = 0) -> bool:
        """Whether the saved fit had finished this loop (and what follows it up to the next)."""
        return (_STAGES.index(stage), index) < self.at

    def before(self, stage: str, index: int = 0) -> bool:
        """Whether nothing was saved at or after this loop (so a save here is new)."""
        return self.at < (_STAGES.index(stage), index)

    def track(self, name: str, module: torch.nn.Module) -> torch.nn.Module:
        """Save ``module`` from now on, and load its saved state if it has one."""
        self.modules[name] = module
        if self.saved is not None and name in self.saved["modules"]:
            module.load_state_dict(self.saved["modules"][name])
        return module

    def arrive(self, stage: str, index: int = 0) -> dict | None:
        """The fit reaches this loop: the saved loop state if the fit stopped in it (the
        generator restored to where it was), else None."""
        if (_STAGES.index(stage), index) != self.at:
            return None
        self.gen.set_state(self.saved["generator"])
        return self.saved["loop"]

    def save_hook(self, stage: str, index: int = 0):
        """``save`` for :func:`fit_epochs` at this loop (None without a checkpoint)."""
        if self.checkpoint is None:
            return None

        def save(loop_state, last: bool):
            self.save(stage, index, loop_state, force=last)

        return save

    def save(self, stage: str, index: int, loop_state=lambda: None, force: bool = True):
        if self.checkpoint is None:
            return

        def state():
            return {
                "stage": stage,
                "index": index,
                "loop": loop_state(),
                "generator": self.gen.get_state(),
                "history": {k: [float(v) for v in vals] for k, vals in self.history.items()},
                "modules": {
                    k: {n: t.detach().cpu().clone() for n, t in m.state_dict().items()}
                    for k, m in self.modules.items()
                },
                "labels": {k: torch.as_tensor(v) for k, v in self.labels.items()},
            }

        self.checkpoint.save(self.key, state, force=force)


@register("kdae")
class KDAE(TorchModel):
    """K-DAE: K auto-encoders, a point's cluster the one that reconstructs it best.

    Parameters
    ----------
    n_clusters : int, default 10
    initial_dims : tuple of int, default (500, 500, 2000, 10)
        Encoder widths of the stage-1 auto-encoder (the last is the embedding).
    initial_epochs : int >= 1, default 10
    n_init : int >= 1, default 100
        k-means restarts on the stage-1 embedding.
    cluster_dims : tuple of int, default (500, 100, 10)
        Encoder widths of each cluster's auto-encoder.
    cluster_epochs : int >= 1, default 100
        At most, per cluster (stage 2; early stopping).
    joint_epochs : int >= 0, default 40
        Stage 3.
    batch_size : int >= 2, default 256
    lr : float > 0, default 1e-3 (Adam, every stage)
    patience : int >= 1, default 10
        Early stopping of stages 1 and 2.
    flush_denormal : bool, default True
    device : str, default "auto" (CUDA when present)
    dtype : {"float32", "float64"}, default "float32"
    random_state : int or None

    Attributes
    ----------
    labels_ : (N,) the auto-encoder of the smallest reconstruction error, after stage 3.
    init_labels_ : (N,) the stage-1 k-means clusters.
    stage2_labels_ : (N,) the assignment after stage 2 (each auto-encoder trained alone).
    history_ : "initial_loss" per stage-1 epoch, "cluster_loss" (the last epoch loss of each
        cluster's auto-encoder), "joint_loss" per stage-3 epoch (the mean minimum error).
    """

    def __init__(
        self,
        n_clusters=10,
        initial_dims=(500, 500, 2000, 10),
        initial_epochs=10,
        n_init=100,
        cluster_dims=(500, 100, 10),
        cluster_epochs=100,
        joint_epochs=40,
        batch_size=256,
        lr=1e-3,
        patience=10,
        flush_denormal=True,
        device="auto",
        dtype="float32",
        random_state=None,
    ):
        self.n_clusters = n_clusters
        self.initial_dims = initial_dims
        self.initial_epochs = initial_epochs
        self.n_init = n_init
        self.cluster_dims = cluster_dims
        self.cluster_epochs = cluster_epochs
        self.joint_epochs = joint_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.patience = patience
        self.flush_denormal = flush_denormal
        self.device = device
        self.dtype = dtype
        self.random_state = random_state

    _history_keys = ("initial_loss", "cluster_loss", "joint_loss")

    _parameter_constraints = {
        "n_clusters": "int >= 1",
        "initial_dims": "ints >= 1",
        "initial_epochs": "int >= 1",
        "n_init": "int >= 1",
        "cluster_dims": "ints >= 1",
        "cluster_epochs": "int >= 1",
        "joint_epochs": "int >= 0",
        "batch_size": "int >= 2",
        "lr": "real > 0",
        "patience": "int >= 1",
        "flush_denormal": "bool",
        "device": "str",
        "dtype": {"float32", "float64"},
        "random_state": ["int >= 0", None],
    }

    def fit(self, X, y=None, init_labels=None, callback=None, checkpoint=None):
        """Train on ``X`` (N, d), values in [0, 1] (the sigmoid output's range). ``init_labels``
        (N,), optional (-1 = unlabelled): the stage-2 clusters instead of stage 1's k-means
        (stage 1 is then skipped; unlabelled points join no cluster's stage 2). ``callback``
        gets a :class:`~mixlib.models.base.Progress` after every stage-1 epoch, after each
        cluster's auto-encoder (stage 2) and after every stage-3 epoch (with ``labels``).
        ``checkpoint``: a :class:`~mixlib.models.base.Checkpoint`; every stage's epochs are
        saved to it as they go, and a fit stopped part-way resumes from it (same labels)."""
        self._validate_params()
        X = check_array_2d(X, min_samples=self.n_clusters)
        lab = check_init_labels(init_labels, X.shape[0], self.n_clusters)
        dev = self._torch_device()
        self.mkl_cnr_ = MKL_CNR
        with thread_invariant(dev, type(self).__name__), subnormals_flushed(self.flush_denormal):
            return self._fit(X, lab, dev, callback, checkpoint)

    def _fit(self, X, lab, dev, callback, checkpoint):
        seed, dt, K = self._seed(), self._torch_dtype(), int(self.n_clusters)
        gen = torch_generator(seed)  # CPU: same init and order on CPU and GPU
        rng = np.random.default_rng(seed)
        Xt = torch.as_tensor(np.asarray(X), dtype=dt).to(dev)
        d = Xt.shape[1]
        stage1 = 0 if lab is not None else int(self.initial_epochs)
        total = stage1 + K + self._n_joint_steps()
        self.history_ = {k: [] for k in self._history_keys}
        bs, lr, pat = int(self.batch_size), float(self.lr), int(self.patience)
        key = None
        if checkpoint is not None:
            start = None if lab is None else data_fingerprint(lab)
            key = checkpoint_key(
                type(self).__name__, {**self.get_params(), "start": start}, seed, X
            )
        ck = self._stages = _Stages(checkpoint, key, gen, self.history_)

        # 1. an auto-encoder of all the data, k-means on its embedding
        if lab is None and ck.passed("initial"):
            lab = ck.labels["init"]
        elif lab is None:
            ae = BNAutoEncoder(d, tuple(int(h) for h in self.initial_dims)).init_(gen, dev, dt)
            ck.track("initial", ae)

            def initial_epoch(epoch, loss):
                self.history_["initial_loss"].append(loss)
                call(callback, Progress(epoch + 1, total, {"initial_loss": loss}))

            resume, save = ck.arrive("initial"), ck.save_hook("initial")
            train_autoencoder(ae, Xt, gen, stage1, bs, pat, lr, initial_epoch, resume, save)
            Z = batched(ae.encoder, Xt).double().cpu().numpy()
            C, _ = kmeans_restarts(Z, K, rng, int(self.n_init))
            lab = _sq_dist_direct(Z, C).argmin(1).astype(np.int64)
            del ck.modules["initial"]
        self.init_labels_ = ck.labels["init"] = lab

        # 2. one auto-encoder per cluster, on its points alone
        dims = tuple(int(h) for h in self.cluster_dims)
        self.autoencoders_ = torch.nn.ModuleList(
            [BNAutoEncoder(d, dims).init_(gen, dev, dt) for _ in range(K)]
        )
        ck.track("autoencoders", self.autoencoders_)
        if ck.before("cluster", 0):
            ck.save("cluster", 0)  # the k-means and the networks' initial state
        for k, ae in enumerate(self.autoencoders_):
            resume = ck.arrive("cluster", k)
            if ck.passed("cluster", k):
                continue
            rows = torch.as_tensor(np.flatnonzero(lab == k), device=dev)
            losses = []
            if rows.numel() >= 2:
                losses = train_autoencoder(
                    ae, Xt[rows], gen, self.cluster_epochs, bs, pat, lr, None, resume,
                    ck.save_hook("cluster", k),
                )  # fmt: skip
            ae.eval()
            last = losses[-1] if losses else math.nan
            self.history_["cluster_loss"].append(last)
            call(callback, Progress(stage1 + k + 1, total, {"cluster_loss": last}))
        if "stage2" not in ck.labels:
            ck.labels["stage2"] = self._assign(Xt)
        self.stage2_labels_ = ck.labels["stage2"]
        self._fit_joint(Xt, gen, stage1 + K, total, callback)
        self.labels_ = self._labels(Xt)
        self.n_features_in_ = d
        del self._stages
        return self

    def _n_joint_steps(self) -> int:
        return int(self.joint_epochs)

    def _fit_joint(self, Xt, gen, done, total, callback) -> None:
        """3. all K together on the smallest reconstruction error (progress steps from
        ``done + 1``)."""

        def joint_loss(xb):
            return batch_mean(self._errors(xb).min(1).values)

        def joint_epoch(epoch, loss):
            self.history_["joint_loss"].append(loss)
            step = done + epoch + 1
            progress = Progress(step, total, {"joint_loss": loss}, labels=lambda: self._labels(Xt))
            call(callback, progress)

        epochs, bs, lr = int(self.joint_epochs), int(self.batch_size), float(self.lr)
        ck = self._stages
        resume, save = ck.arrive("joint"), ck.save_hook("joint")
        nets = self.autoencoders_
        fit_epochs(nets, joint_loss, Xt, gen, epochs, bs, lr, None, joint_epoch, resume, save)

    # -- inference ------------------------------------------------------------------------------
    def _errors(self, xb: torch.Tensor, squared: bool = False) -> torch.Tensor:
        """(B, K) Euclidean reconstruction errors (or their squares) of the rows of ``xb`` by
        each auto-encoder."""
        if squared:
            cols = [((xb - torch.sigmoid(ae(xb))) ** 2).sum(1) for ae in self.autoencoders_]
        else:
            cols = [(xb - torch.sigmoid(ae(xb))).norm(dim=1) for ae in self.autoencoders_]
        return torch.stack(cols, 1)

    def _assign(self, Xt: torch.Tensor) -> np.ndarray:
        """The auto-encoder of the smallest reconstruction error per row (inference mode)."""
        self.autoencoders_.eval()
        err = batched(self._errors, Xt)
        return err.argmin(1).cpu().numpy().astype(np.int64)

    def _labels(self, Xt: torch.Tensor) -> np.ndarray:
        """The clusters the model reports: K-DAE's are :meth:`_assign`'s."""
        return self._assign(Xt)

    def predict(self, X) -> np.ndarray:
        name = type(self).__name__
        if not hasattr(self, "labels_"):
            raise RuntimeError(f"{name} is not fitted yet; call fit first")
        Xt = as_input(X, self.autoencoders_[0].encoder[0].weight)
        with thread_invariant(Xt.device, name):
            return self._labels(Xt)

    def n_parameters(self) -> int:
        """The K auto-encoders' weights, biases and batch-normalisation scales and shifts (the
        stage-1 auto-encoder only starts them)."""
        if not hasattr(self, "labels_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet; call fit first")
        return int(sum(p.numel() for p in self.autoencoders_.parameters()))


@register("damic")
class DAMIC(KDAE):
    """DAMIC: a mixture of K auto-encoders gated by a clustering network.

    Chazan, Gannot & Goldberger, "Deep Clustering Based on a Mixture of Autoencoders", MLSP 2019
    (arXiv:1812.06535); MixMate's Table 1 DAMIC column. A clustering network gives
    ``p(k | x)``; auto-encoder ``k`` reconstructs ``x`` as ``x^_k``; the model is the mixture
    of unit-variance Gaussians centred on the reconstructions, and all networks are trained
    together on its negative log-likelihood ``-mean_i log sum_k p(k | x_i) exp(-||x_i -
    x^_k(x_i)||^2 / 2)`` (no other term: the gate cannot collapse the data because each expert
    must still reconstruct its points). A point's cluster is the clustering network's
    ``argmax_k p(k | x)``.

    Its start is the paper's: an auto-encoder on all the data and k-means on its embedding; one
    auto-encoder per cluster trained on its points; the clustering network trained to predict
    the k-means clusters (cross-entropy). The authors published no code, so the networks and
    schedules are K-DAE's (:class:`KDAE`: the same group's follow-up, whose Keras code is
    public), stages 1 and 2 shared with it; the clustering network is a ``Dense -> batch norm
    -> ReLU`` MLP of DEC's widths (``gate_dims`` 500-500-2000) and a softmax; Adam, lr 1e-3,
    batches of 256 throughout, ``gate_epochs`` of the gate's pre-training, ``joint_epochs`` of
    the joint phase. Parameters as :class:`KDAE`, plus ``gate_dims`` (tuple of int, default
    (500, 500, 2000)) and ``gate_epochs`` (int >= 1, default 20).

    Attributes as :class:`KDAE`'s (``labels_`` the gate's argmax after the joint phase;
    ``stage2_labels_`` the K auto-encoders' smallest-error assignment before it), with
    ``gate_`` (the clustering network, logits out) and ``history_["gate_loss"]`` per gate
    pre-training epoch (cross-entropy); ``history_["joint_loss"]`` is the negative
    log-likelihood per joint epoch.
    """

    def __init__(
        self,
        n_clusters=10,
        initial_dims=(500, 500, 2000, 10),
        initial_epochs=10,
        n_init=100,
        cluster_dims=(500, 100, 10),
        cluster_epochs=100,
        gate_dims=(500, 500, 2000),
        gate_epochs=20,
        joint_epochs=40,
        batch_size=256,
        lr=1e-3,
        patience=10,
        flush_denormal=True,
        device="auto",
        dtype="float32",
        random_state=None,
    ):
        super().__init__(
            n_clusters=n_clusters,
            initial_dims=initial_dims,
            initial_epochs=initial_epochs,
            n_init=n_init,
            cluster_dims=cluster_dims,
            cluster_epochs=cluster_epochs,
            joint_epochs=joint_epochs,
            batch_size=batch_size,
            lr=lr,
            patience=patience,
            flush_denormal=flush_denormal,
            device=device,
            dtype=dtype,
            random_state=random_state,
        )
        self.gate_dims = gate_dims
        self.gate_epochs = gate_epochs

    _history_keys = ("initial_loss", "cluster_loss", "gate_loss", "joint_loss")

    _parameter_constraints = {
        **KDAE._parameter_constraints,
        "gate_dims": "ints >= 1",
        "gate_epochs": "int >= 1",
    }

    def _n_joint_steps(self) -> int:
        return int(self.gate_epochs) + int(self.joint_epochs)

    def _fit_joint(self, Xt, gen, done, total, callback) -> None:
        """The clustering network: trained on the start's clusters (points without one left
        out), then with the K auto-encoders on the mixture's negative log-likelihood."""
        K, bs, lr = int(self.n_clusters), int(self.batch_size), float(self.lr)
        dims = tuple(int(h) for h in self.gate_dims)
        self.gate_ = keras_init_(bn_mlp(Xt.shape[1], dims, K), gen, Xt.device, Xt.dtype)
        ck = self._stages
        ck.track("gate", self.gate_)
        start = torch.as_tensor(self.init_labels_, device=Xt.device)
        rows = torch.nonzero(start >= 0).flatten()
        target = torch.zeros((Xt.shape[0], K), dtype=Xt.dtype, device=Xt.device)
        target[rows, start[rows]] = 1.0
        XY = torch.cat([Xt, target], 1)[rows]  # the rows and their one-hot targets together
        d = Xt.shape[1]

        def gate_loss(xy):
            logp = torch.log_softmax(self.gate_(xy[:, :d]), 1)
            return batch_mean(-(logp * xy[:, d:]).sum(1))

        def gate_epoch(epoch, loss):
            self.history_["gate_loss"].append(loss)
            call(callback, Progress(done + epoch + 1, total, {"gate_loss": loss}))

        resume, save = ck.arrive("gate"), ck.save_hook("gate")
        epochs = int(self.gate_epochs)
        if not ck.passed("gate"):
            fit_epochs(
                self.gate_, gate_loss, XY, gen, epochs, bs, lr, None, gate_epoch, resume, save
            )
        done += epochs

        def joint_loss(xb):
            return batch_mean(-torch.logsumexp(self._log_joint(xb), 1))

        def joint_epoch(epoch, loss):
            self.history_["joint_loss"].append(loss)
            step = done + epoch + 1
            progress = Progress(step, total, {"joint_loss": loss}, labels=lambda: self._labels(Xt))
            call(callback, progress)

        nets = torch.nn.ModuleList([self.gate_, self.autoencoders_])
        epochs = int(self.joint_epochs)
        resume, save = ck.arrive("joint"), ck.save_hook("joint")
        fit_epochs(nets, joint_loss, Xt, gen, epochs, bs, lr, None, joint_epoch, resume, save)

    def _log_joint(self, xb: torch.Tensor) -> torch.Tensor:
        """(B, K) ``log p(k | x) - ||x - x^_k||^2 / 2`` (the mixture's log terms up to a
        constant)."""
        return torch.log_softmax(self.gate_(xb), 1) - 0.5 * self._errors(xb, squared=True)

    def _labels(self, Xt: torch.Tensor) -> np.ndarray:
        """The clustering network's most probable cluster per row (inference mode)."""
        self.gate_.eval()
        return batched(self.gate_, Xt).argmax(1).cpu().numpy().astype(np.int64)

    def n_parameters(self) -> int:
        """The K auto-encoders' and the clustering network's parameters."""
        gate = sum(p.numel() for p in self.gate_.parameters()) if hasattr(self, "gate_") else 0
        return super().n_parameters() + int(gate)
