"""DEC and IDEC: deep embedded clustering by self-training on a sharpened soft assignment.

- DEC: Xie, Girshick & Farhadi, "Unsupervised Deep Embedding for Clustering Analysis",
  ICML 2016.
- IDEC: Guo, Gao, Liu & Yin, "Improved Deep Embedded Clustering with Local Structure
  Preservation", IJCAI 2017.

Both pre-train an auto-encoder ``d-500-500-2000-10`` (ReLU hidden layers, linear embedding and
output) on the reconstruction loss, seed ``K`` centres by k-means on its embedding, then train
the encoder and the centres on ``KL(P || Q)``, where ``Q`` is the Student-t soft assignment

    q_ij = (1 + ||z_i - mu_j||^2 / alpha)^(-(alpha + 1) / 2) / sum_j' (...)

and the target ``P`` sharpens it, ``p_ij = (q_ij^2 / f_j) / sum_j' (q_ij'^2 / f_j')`` with
``f_j = sum_i q_ij``. ``P`` is recomputed on the whole data set every ``update_interval``
mini-batches and held fixed in between; training stops when fewer than ``tol`` of the labels
changed between two updates, or after ``max_iter`` mini-batches. IDEC keeps the decoder and
adds the reconstruction loss: ``L = MSE + gamma * KL`` (DEC drops the decoder after
pre-training).

Defaults follow the authors' Keras code for MNIST (github.com/XifengGuo/DEC-keras ``DEC.py``,
which IDEC's code reuses for pre-training; github.com/XifengGuo/IDEC ``IDEC.py``):

- pre-training: weights ``U(-sqrt(1/fan_in), sqrt(1/fan_in))`` (``VarianceScaling(1/3,
  "fan_in", "uniform")``), zero biases; SGD with lr 1, momentum 0.9; 300 epochs of batches of
  256 reshuffled every epoch; loss ``"mse"`` (mean over features and batch);
- centres: k-means with 20 restarts on the embedding;
- clustering: batches of 256 taken in the data's order, cyclically (the last partial batch
  included); Keras' ``"kld"`` loss, ``sum_j p_ij log(p_ij / q_ij)`` with both clipped to
  ``[1e-7, 1]``, averaged over the batch; ``update_interval = 140``, ``tol = 1e-3``,
  ``max_iter = 20000``; DEC: SGD lr 0.01, momentum 0.9, encoder and centres; IDEC: Adam
  (Keras' defaults: lr 1e-3, epsilon 1e-7) on the whole auto-encoder and the centres,
  ``gamma = 0.1``.

Deviations: torch instead of Keras; k-means by :func:`~mixlib.models.power_kmeans.kmeans_restarts`
(thread-invariant, ``random_state``-seeded; the reference uses scikit-learn's ``KMeans`` without
a seed); ``P`` and the label changes are computed in float64 numpy (the same bits whatever the
thread count); ``labels_`` are the assignment of the final parameters (the reference returns the
labels of the last update of ``P``, the same when training stops by ``tol``, up to
``update_interval - 1`` mini-batches older when it stops at ``max_iter``); ``random_state``
seeds the weights and the pre-training batch order. The DEC paper pre-trains layer-wise with
dropout (50,000 iterations per layer, then 100,000 end to end); the Keras code trains end to end
only, as here.

Same seed, same labels whatever the thread count (MKL strict CNR mode, see
:mod:`mixlib.models.power_kmeans`), subnormals flushed while training.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from ..utils import torch_generator
from . import data_fingerprint, pretrain_recipe, register
from .base import (
    Progress,
    TorchModel,
    adam,
    call,
    centers_from_labels,
    check_array_2d,
    check_init_labels,
    checkpoint_key,
    resume_loop,
    save_loop,
    subnormals_flushed,
)
from .power_kmeans import (
    MKL_CNR,
    _AutoEncoder,
    _sq_dist_direct,
    cluster_sums,
    kmeans_restarts,
    lloyd,
    thread_invariant,
)

_KLD_CLIP = 1e-7  # Keras' epsilon: "kld" clips both distributions to [1e-7, 1]


def soft_assignment(Z: torch.Tensor, mu: torch.Tensor, alpha: float) -> torch.Tensor:
    """(N, K) Student-t soft assignment of embeddings Z (N, e) to centres mu (K, e)."""
    d2 = ((Z[:, None, :] - mu[None, :, :]) ** 2).sum(-1)
    q = (1.0 + d2 / alpha) ** (-(alpha + 1.0) / 2.0)
    return q / q.sum(1, keepdim=True)


def target_distribution(q: np.ndarray) -> np.ndarray:
    """(N, K) DEC's sharpened target ``P`` of a soft assignment ``q`` (N, K), in float64."""
    w = q**2 / q.sum(0)
    return w / w.sum(1, keepdims=True)


def keras_kld(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Keras' ``kullback_leibler_divergence`` averaged over the batch."""
    p = p.clamp(_KLD_CLIP, 1.0)
    return (p * (p.log() - q.clamp(_KLD_CLIP, 1.0).log())).sum(1).mean()


def _fan_in_uniform_(ae: torch.nn.Module, gen: torch.Generator, device, dtype) -> None:
    """Keras ``VarianceScaling(1/3, "fan_in", "uniform")`` weights, zero biases, from ``gen``."""
    ae.to_empty(device=device)
    ae.to(dtype)
    with torch.no_grad():
        for m in ae.modules():
            if isinstance(m, torch.nn.Linear):
                b = 1.0 / math.sqrt(m.in_features)
                w = torch.empty(m.weight.shape, dtype=torch.float64).uniform_(-b, b, generator=gen)
                m.weight.copy_(w.to(device=device, dtype=dtype))
                m.bias.zero_()


class _EmbeddedClustering(TorchModel):
    """What DEC and IDEC share; ``gamma`` None (DEC): KL only, encoder and centres trained."""

    gamma = None

    def _optimizer(self, params, kind: str, lr: float):
        if kind == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=0.9)
        return adam(params, lr=lr, eps=1e-7)  # Keras' Adam epsilon

    # -- fit ------------------------------------------------------------------------------------
    def fit(self, X, y=None, init_labels=None, callback=None, pretrained=None, checkpoint=None):
        """Train on ``X`` (N, d). ``init_labels`` (N,), optional (-1 = unlabelled): the centres
        start at the means of the embeddings of the labelled points instead of k-means.
        ``pretrained``: a state from :meth:`pretrain` (of a DEC or IDEC with the same
        pre-training hyperparameters and seed, on the same ``X``): the pre-training is skipped
        and the model continues from that auto-encoder, with the same result as pre-training
        itself. ``callback`` gets a :class:`~mixlib.models.base.Progress` after every
        pre-training epoch (``{"reconstruction": mse}``) and at every update of the target
        (``{"kl": ..., "delta_label": ...}``, IDEC also ``"reconstruction"``, with ``labels``).
        ``checkpoint``: a :class:`~mixlib.models.base.Checkpoint` for the pre-training's epochs
        (as :meth:`pretrain`'s, when it pre-trains) and the clustering phase (DEC and IDEC: just
        before an update of the target; DCN: after each epoch): a fit stopped part-way and
        called again resumes from its last save with the uninterrupted fit's result (the saved
        clustering phase skips the pre-training and k-means)."""
        self._validate_params()
        X = check_array_2d(X, min_samples=self.n_clusters)
        lab = check_init_labels(init_labels, X.shape[0], self.n_clusters)
        if pretrained is not None:
            self._check_pretrained(pretrained, X)
        dev = self._torch_device()
        self.mkl_cnr_ = MKL_CNR
        with thread_invariant(dev, type(self).__name__), subnormals_flushed(self.flush_denormal):
            self.fit_threads_ = torch.get_num_threads()
            return self._fit(X, lab, dev, callback, pretrained, checkpoint)

    def pretrain(self, X, callback=None, checkpoint=None) -> dict:
        """Only the first stage of :meth:`fit`, the auto-encoder's pre-training on ``X``; returns
        the state that ``fit(X, pretrained=state)`` continues from (plain Python and CPU
        tensors, for ``torch.save``): ``recipe`` (the pre-training hyperparameters), ``seed``,
        ``data`` (a fingerprint of ``X``), ``state_dict`` and ``history`` (the reconstruction
        loss per epoch). The workflow runs it once per dataset and seed for DEC and IDEC.
        ``checkpoint``: a :class:`~mixlib.models.base.Checkpoint` the epochs are saved to and
        resumed from (a pre-training of the same recipe, seed and ``X`` stopped part-way
        continues after its last save, with the uninterrupted one's result; shared by DEC and
        IDEC, as the pre-training is); the caller removes it once the state is saved."""
        self._validate_params()
        X = check_array_2d(X, min_samples=self.n_clusters)
        dev = self._torch_device()
        with thread_invariant(dev, type(self).__name__), subnormals_flushed(self.flush_denormal):
            seed = self._seed()
            gen = torch_generator(seed)
            Xt = torch.as_tensor(np.asarray(X), dtype=self._torch_dtype()).to(dev)
            self.history_ = {"pretrain_reconstruction": []}
            ae = self._pretrain(Xt, gen, self.pretrain_epochs, callback, checkpoint, X)
        return {
            "recipe": pretrain_recipe(self.get_params()),
            "seed": seed,
            "data": data_fingerprint(X),
            "state_dict": {k: v.detach().cpu().clone() for k, v in ae.state_dict().items()},
            "history": list(self.history_["pretrain_reconstruction"]),
        }

    def _check_pretrained(self, state, X) -> None:
        name = type(self).__name__
        missing = {"recipe", "seed", "data", "state_dict", "history"} - set(state)
        if missing:
            raise ValueError(f"{name}: pretrained state lacks {sorted(missing)}: not from pretrain")
        own = pretrain_recipe(self.get_params())
        diff = sorted(
            k for k in own.keys() | state["recipe"].keys() if own.get(k) != state["recipe"].get(k)
        )
        if diff:
            pairs = ", ".join(f"{k}: {state['recipe'].get(k)!r} != {own.get(k)!r}" for k in diff)
            raise ValueError(
                f"{name}: pretrained auto-encoder from other hyperparameters ({pairs})"
            )
        if self.random_state is not None and int(state["seed"]) != int(self.random_state):
            raise ValueError(
                f"{name}: pretrained auto-encoder from seed {state['seed']}, "
                f"random_state is {self.random_state}"
            )
        if state["data"] != data_fingerprint(X):
            raise ValueError(f"{name}: pretrained auto-encoder fitted on other data than X")

    # -- checkpointing of the clustering phase ---------------------------------------------------
    def _phase_key(self, X, lab, checkpoint) -> str | None:
        """The :class:`~mixlib.models.base.Checkpoint` key of the clustering phase's saves (None
        without a checkpoint): the model, all its parameters, the start labels, seed and data."""
        if checkpoint is None:
            return None
        start = None if lab is None else data_fingerprint(lab)
        params = {**self.get_params(), "start": start}
        return checkpoint_key(f"{type(self).__name__} clustering", params, self._seed(), X)

    def _resume_phase(self, checkpoint, key, X, dev) -> dict | None:
        """The clustering phase's saved loop state, or None. With one, the fit skips the
        pre-training and the initial k-means: ``ae_``, ``init_labels_`` and ``history_`` are
        restored from the save, and the loop continues from its state there."""
        saved = None if checkpoint is None else checkpoint.load(key, warn=False)
        if saved is None:
            return None
        self.ae_ = self._empty_autoencoder(X.shape[1], dev)
        self.ae_.load_state_dict(saved["autoencoder"])
        self.init_labels_ = saved["init_labels"].numpy()
        self.history_ = {k: [float(v) for v in vals] for k, vals in saved["history"].items()}
        logging.getLogger(__name__).info("resumed the clustering phase from %s", checkpoint.path)
        return saved["loop"]

    def _save_phase(self, checkpoint, key, loop: dict) -> None:
        """Save the clustering phase to ``checkpoint`` (if any) when a save is due: the
        auto-encoder, start labels and curves, and ``loop`` (what the loop reads: CPU tensors
        and numbers, cheap to build, as they are views of the loop's arrays or tiny)."""
        if checkpoint is None:
            return
        checkpoint.save(
            key,
            lambda: {
                "autoencoder": {
                    k: v.detach().cpu().clone() for k, v in self.ae_.state_dict().items()
                },
                "init_labels": torch.as_tensor(self.init_labels_),
                "history": {k: [float(v) for v in vals] for k, vals in self.history_.items()},
                "loop": loop,
            },
        )

    def _empty_autoencoder(self, d: int, dev) -> _AutoEncoder:
        """The auto-encoder's architecture without weights (built on the meta device), on
        ``dev`` in the model's dtype, for a saved state to be loaded into."""
        ae = _AutoEncoder(d, tuple(int(h) for h in self.hidden_dims), self.embedding_size)
        return ae.to_empty(device=dev).to(self._torch_dtype())

    def _pretrain(self, Xt, gen, total, callback, checkpoint, X) -> _AutoEncoder:
        """The auto-encoder alone: a new one, ``pretrain_epochs`` epochs of reconstruction
        (after those ``checkpoint`` holds, if any; saved to it as they go and at the end)."""
        N, d = Xt.shape
        dev, dt = Xt.device, Xt.dtype
        ae = _AutoEncoder(d, tuple(int(h) for h in self.hidden_dims), self.embedding_size)
        _fan_in_uniform_(ae, gen, dev, dt)
        opt = self._optimizer(ae.parameters(), self.pretrain_optimizer, self.pretrain_lr)
        key = None
        if checkpoint is not None:
            recipe = pretrain_recipe(self.get_params())
            key = checkpoint_key("DEC/IDEC pre-training", recipe, self._seed(), X)
        history = self.history_
        done = resume_loop(checkpoint, key, ae, opt, gen, history)
        for epoch in range(done, self.pretrain_epochs):
            perm = torch.randperm(N, generator=gen).to(dev)
            sse = torch.zeros((), dtype=dt, device=dev)
            for i in range(0, N, self.batch_size):
                xb = Xt[perm[i : i + self.batch_size]]
                _, xr = ae(xb)
                loss = ((xr - xb) ** 2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sse += loss.detach() * xb.shape[0]
            mse = float(sse) / N  # one host sync per epoch
            if not math.isfinite(mse):
                raise FloatingPointError(f"{type(self).__name__} pre-training loss became {mse}")
            self.history_["pretrain_reconstruction"].append(mse)
            save_loop(checkpoint, key, epoch + 1, self.pretrain_epochs, ae, opt, gen, history)
            call(callback, Progress(epoch + 1, total, {"reconstruction": mse}))
        return ae

    def _start(self, X, lab, dev, total, callback, pretrained, checkpoint):
        """What every model of the family starts with: the pre-trained auto-encoder (trained
        here, or the one it was given) and k-means centres on its embedding (or the means of
        the labelled points). Sets ``ae_`` and ``init_labels_``; returns the data as a tensor,
        the seeded numpy generator (as the centres left it) and the centres (K, e), float64."""
        seed = self._seed()
        dt = self._torch_dtype()
        gen = torch_generator(seed)  # CPU: same init and order on CPU and GPU
        rng = np.random.default_rng(seed)
        Xt = torch.as_tensor(np.asarray(X), dtype=dt).to(dev)
        N, d = Xt.shape

        # 1. the auto-encoder alone (or the one it was given)
        if pretrained is None:
            self.ae_ = self._pretrain(Xt, gen, total, callback, checkpoint, X)
        else:
            self.ae_ = self._empty_autoencoder(d, dev)
            self.ae_.load_state_dict(pretrained["state_dict"])
            self.history_["pretrain_reconstruction"] = [float(v) for v in pretrained["history"]]

        # 2. centres: k-means on the embedding (or the means of the labelled points)
        Z0 = self.ae_.embed(Xt).double().cpu().numpy()
        if lab is not None:
            C0 = centers_from_labels(Z0, lab, self.n_clusters, rng)
        else:
            C0, _ = kmeans_restarts(Z0, self.n_clusters, rng, self.n_init)
        self.init_labels_ = _sq_dist_direct(Z0, C0).argmin(1).astype(np.int64)
        return Xt, rng, C0

    def _fit(self, X, lab, dev, callback, pretrained, checkpoint):
        n_updates = -(-self.max_iter // self.update_interval)
        total = self.pretrain_epochs + n_updates
        self.history_ = {
            "pretrain_reconstruction": [],
            "kl": [],
            "delta_label": [],
            "reconstruction": [],
        }
        key = self._phase_key(X, lab, checkpoint)
        loop = self._resume_phase(checkpoint, key, X, dev)
        if loop is None:
            Xt, _, C0 = self._start(X, lab, dev, total, callback, pretrained, checkpoint)
        else:
            Xt = self.ae_.as_input(X)
            C0 = loop["centers"]
        N, dt = Xt.shape[0], Xt.dtype
        self.cluster_centers_t_ = torch.nn.Parameter(torch.as_tensor(C0, dtype=dt, device=dev))

        # 3. self-training on the target P
        mu = self.cluster_centers_t_
        idec = self.gamma is not None
        trained = self.ae_ if idec else self.ae_.encoder
        opt = self._optimizer([*trained.parameters(), mu], self.optimizer, self.lr)
        bs = self.batch_size
        n_batches = -(-N // bs)
        y_last = self.init_labels_
        kl_sum = torch.zeros((), dtype=dt, device=dev)  # since the last update of P
        rec_sum = torch.zeros((), dtype=dt, device=dev)
        since, step, b, first = 0, self.pretrain_epochs, 0, 0
        if loop is not None:  # saved just before an update of P, as below
            opt.load_state_dict(loop["optimizer"])
            y_last = loop["y_last"].numpy()
            kl_sum, rec_sum = loop["kl_sum"].to(dev), loop["rec_sum"].to(dev)
            since, step, b, first = (int(loop[k]) for k in ("since", "step", "b", "ite"))
        for ite in range(first, self.max_iter):
            if ite % self.update_interval == 0:
                self._save_phase(
                    checkpoint,
                    key,
                    {
                        "ite": ite,
                        "b": b,
                        "step": step,
                        "since": since,
                        "centers": mu.detach().cpu().clone(),
                        "optimizer": opt.state_dict(),
                        "y_last": torch.as_tensor(y_last),
                        "kl_sum": kl_sum.detach().cpu().clone(),
                        "rec_sum": rec_sum.detach().cpu().clone(),
                    },
                )
                q = self._soft(Xt)
                P = torch.as_tensor(target_distribution(q), dtype=dt, device=dev)
                y_now = q.argmax(1).astype(np.int64)
                delta = float(np.mean(y_now != y_last))
                y_last = y_now
                step += 1
                metrics = {"delta_label": delta}
                if since:  # one host sync per update
                    metrics["kl"] = float(kl_sum) / since
                    self.history_["kl"].append(metrics["kl"])
                    if idec:
                        metrics["reconstruction"] = float(rec_sum) / since
                        self.history_["reconstruction"].append(metrics["reconstruction"])
                    if not all(math.isfinite(v) for v in metrics.values()):
                        raise FloatingPointError(
                            f"{type(self).__name__} loss became non-finite: {metrics}"
                        )
                self.history_["delta_label"].append(delta)
                call(callback, Progress(step, total, metrics, labels=lambda y=y_now: y))
                if ite > 0 and delta < self.tol:
                    break
                kl_sum = torch.zeros((), dtype=dt, device=dev)
                rec_sum = torch.zeros((), dtype=dt, device=dev)
                since = 0
            xb, pb = Xt[b * bs : (b + 1) * bs], P[b * bs : (b + 1) * bs]
            b = (b + 1) % n_batches
            if idec:
                zb, xr = self.ae_(xb)
                rec = ((xr - xb) ** 2).mean()
            else:
                zb = self.ae_.encoder(xb)
            kl = keras_kld(pb, soft_assignment(zb, mu, self.alpha))
            loss = rec + self.gamma * kl if idec else kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            kl_sum = kl_sum + kl.detach()
            if idec:
                rec_sum = rec_sum + rec.detach()
            since += 1
        self.n_iter_ = ite + 1
        self.cluster_centers_ = mu.detach().double().cpu().numpy()
        self.labels_ = self._soft(Xt).argmax(1).astype(np.int64)
        return self

    # -- inference ------------------------------------------------------------------------------
    def _soft(self, Xt: torch.Tensor) -> np.ndarray:
        """(N, K) float64 soft assignment of the rows of ``Xt`` under the current parameters."""
        Z = self.ae_.embed(Xt).double().cpu().numpy()
        mu = self.cluster_centers_t_.detach().double().cpu().numpy()
        q = (1.0 + _sq_dist_direct(Z, mu) / self.alpha) ** (-(self.alpha + 1.0) / 2.0)
        return q / q.sum(1, keepdims=True)

    def _to_tensor(self, X) -> torch.Tensor:
        if not hasattr(self, "cluster_centers_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet; call fit first")
        return self.ae_.as_input(X)

    def predict_proba(self, X) -> np.ndarray:
        """(N, K) soft assignment Q."""
        return self._soft(self._to_tensor(X))

    def predict(self, X) -> np.ndarray:
        return self.predict_proba(X).argmax(1).astype(np.int64)

    def transform(self, X) -> np.ndarray:
        """(N, e) embeddings."""
        return self.ae_.embed(self._to_tensor(X)).double().cpu().numpy()

    def n_parameters(self) -> int:
        """The trained network (DEC: the encoder; IDEC: encoder and decoder) and the centres."""
        if not hasattr(self, "cluster_centers_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet; call fit first")
        net = self.ae_ if self.gamma is not None else self.ae_.encoder
        return int(sum(p.numel() for p in net.parameters()) + self.cluster_centers_.size)


@register("dec")
class DEC(_EmbeddedClustering):
    """Deep Embedded Clustering (Xie et al. 2016), the authors' Keras recipe for MNIST.

    Parameters
    ----------
    n_clusters : int, default 10
    hidden_dims : tuple of int, default (500, 500, 2000)
        Encoder hidden widths (the decoder mirrors them).
    embedding_size : int, default 10
    pretrain_epochs : int >= 0, default 300
    pretrain_optimizer : {"sgd", "adam"}, default "sgd" (momentum 0.9; Adam: epsilon 1e-7)
    pretrain_lr : float, default 1.0
    batch_size : int, default 256 (both phases)
    alpha : float > 0, default 1.0
        Degrees of freedom of the Student-t kernel.
    n_init : int >= 1, default 20
        k-means restarts on the pre-trained embedding.
    optimizer : {"sgd", "adam"}, default "sgd"
        Of the clustering phase (SGD: momentum 0.9).
    lr : float, default 0.01
    max_iter : int >= 1, default 20000
        Mini-batches of the clustering phase at most.
    update_interval : int >= 1, default 140
        Mini-batches between two updates of the target ``P``.
    tol : float >= 0, default 1e-3
        Stop when fewer than this fraction of the labels changed between two updates.
    flush_denormal : bool, default True
        Train with subnormal floats flushed to zero on the CPU.
    device : str, default "auto" (CUDA when present)
    dtype : {"float32", "float64"}, default "float32"
    random_state : int or None

    Attributes
    ----------
    labels_ : (N,) most probable cluster under the final parameters.
    init_labels_ : (N,) nearest k-means centre on the pre-trained embedding.
    cluster_centers_ : (K, e) centres in the embedding (numpy).
    n_iter_ : clustering mini-batches run (the last counted one is the update that stopped it).
    history_ : "pretrain_reconstruction" per pre-training epoch; per update of P:
        "delta_label", "kl" (mean batch KL since the previous update), IDEC also
        "reconstruction".
    """

    def __init__(
        self,
        n_clusters=10,
        hidden_dims=(500, 500, 2000),
        embedding_size=10,
        pretrain_epochs=300,
        pretrain_optimizer="sgd",
        pretrain_lr=1.0,
        batch_size=256,
        alpha=1.0,
        n_init=20,
        optimizer="sgd",
        lr=0.01,
        max_iter=20000,
        update_interval=140,
        tol=1e-3,
        flush_denormal=True,
        device="auto",
        dtype="float32",
        random_state=None,
    ):
        self.n_clusters = n_clusters
        self.hidden_dims = hidden_dims
        self.embedding_size = embedding_size
        self.pretrain_epochs = pretrain_epochs
        self.pretrain_optimizer = pretrain_optimizer
        self.pretrain_lr = pretrain_lr
        self.batch_size = batch_size
        self.alpha = alpha
        self.n_init = n_init
        self.optimizer = optimizer
        self.lr = lr
        self.max_iter = max_iter
        self.update_interval = update_interval
        self.tol = tol
        self.flush_denormal = flush_denormal
        self.device = device
        self.dtype = dtype
        self.random_state = random_state

    _parameter_constraints = {
        "n_clusters": "int >= 1",
        "hidden_dims": "ints >= 1",
        "embedding_size": "int >= 1",
        "pretrain_epochs": "int >= 0",
        "pretrain_optimizer": {"sgd", "adam"},
        "pretrain_lr": "real > 0",
        "batch_size": "int >= 1",
        "alpha": "real > 0",
        "n_init": "int >= 1",
        "optimizer": {"sgd", "adam"},
        "lr": "real > 0",
        "max_iter": "int >= 1",
        "update_interval": "int >= 1",
        "tol": "real >= 0",
        "flush_denormal": "bool",
        "device": "str",
        "dtype": {"float32", "float64"},
        "random_state": ["int >= 0", None],
    }


@register("idec")
class IDEC(_EmbeddedClustering):
    """Improved DEC (Guo et al. 2017): DEC's clustering loss weighted by ``gamma`` plus the
    auto-encoder's reconstruction loss, the decoder kept. Parameters as :class:`DEC`, with
    ``gamma`` (float > 0, default 0.1) and the clustering phase's optimiser Adam, lr 1e-3 (the
    authors' MNIST setting)."""

    def __init__(
        self,
        n_clusters=10,
        hidden_dims=(500, 500, 2000),
        embedding_size=10,
        pretrain_epochs=300,
        pretrain_optimizer="sgd",
        pretrain_lr=1.0,
        batch_size=256,
        alpha=1.0,
        n_init=20,
        optimizer="adam",
        lr=1e-3,
        max_iter=20000,
        update_interval=140,
        tol=1e-3,
        gamma=0.1,
        flush_denormal=True,
        device="auto",
        dtype="float32",
        random_state=None,
    ):
        self.n_clusters = n_clusters
        self.hidden_dims = hidden_dims
        self.embedding_size = embedding_size
        self.pretrain_epochs = pretrain_epochs
        self.pretrain_optimizer = pretrain_optimizer
        self.pretrain_lr = pretrain_lr
        self.batch_size = batch_size
        self.alpha = alpha
        self.n_init = n_init
        self.optimizer = optimizer
        self.lr = lr
        self.max_iter = max_iter
        self.update_interval = update_interval
        self.tol = tol
        self.gamma = gamma
        self.flush_denormal = flush_denormal
        self.device = device
        self.dtype = dtype
        self.random_state = random_state

    _parameter_constraints = {**DEC._parameter_constraints, "gamma": "real > 0"}


@register("dcn")
class DCN(_EmbeddedClustering):
    """Deep Clustering Network (Yang, Fu, Sidiropoulos & Hong, "Towards K-means-friendly
    Spaces", ICML 2017): the auto-encoder trained on ``lam * ||x - g(f(x))||^2 + beta *
    ||f(x) - m_s(x)||^2``, the second term pulling each embedding towards the centre it is
    assigned to, while an online k-means updates the assignments and centres after every
    mini-batch. One of MixMate's Table 1 baselines.

    The clustering phase follows the authors' code for MNIST (github.com/boyangumn/DCN-New,
    ``run_raw_mnist.py`` and ``multi_layer_km.py``): per-sample squared errors summed over
    features and averaged over the batch, ``lam = beta = 1``; the rows shuffled once and taken
    in that order every epoch in batches of 256, the last partial batch left out; per batch one
    step of Nesterov momentum SGD (lr 1e-4, momentum 0.9, biases at twice the lr) towards the
    centres of the assignments held, then the batch's new embedding assigned to the nearest
    centre and each centre moved by ``m_k += (z - m_k) / n_k`` per assigned row (the counts
    ``n_k`` start at 100); every 10 epochs k-means (Lloyd) from the current centres on the
    embedding of every row refreshes centres and assignments; 50 epochs. ``labels_`` are the
    assignments after the refresh of the last epoch (done whether or not it is a multiple of
    ``refresh_every``), the labels the authors' script reports.

    Deviations: the auto-encoder and its pre-training are DEC's (untied decoder weights; end to
    end, SGD lr 1, 300 epochs; the workflow shares one pre-trained auto-encoder between DEC, IDEC
    and DCN), where the authors tie each decoder layer's weights to its encoder layer's and
    pre-train layer-wise (250 epochs per layer, then 250 end to end, lr 1e-4 with momentum) on
    MNIST multiplied by 5.1; here the data keep the dataset's own scaling. The initial k-means is
    :func:`~mixlib.models.power_kmeans.kmeans_restarts` (``n_init`` 10, as the authors'
    scikit-learn call) and the refreshes run Lloyd until the centres stop changing (scikit-learn's
    stops at a tolerance). The centres and assignments are float64 numpy (the same bits
    whatever the thread count).

    Parameters
    ----------
    n_clusters, hidden_dims, embedding_size, pretrain_epochs, pretrain_optimizer, pretrain_lr,
    batch_size, flush_denormal, device, dtype, random_state : as :class:`DEC` (the
        pre-training's are DEC's, so that the three share it).
    n_init : int >= 1, default 10
        k-means restarts on the pre-trained embedding.
    lam : float >= 0, default 1.0
        Weight of the reconstruction error.
    beta : float >= 0, default 1.0
        Weight of the clustering term.
    lr : float > 0, default 1e-4
        Of the clustering phase's Nesterov SGD (momentum 0.9; biases at ``2 * lr``).
    n_epochs : int >= 1, default 50
    refresh_every : int >= 1, default 10
        Epochs between two k-means refreshes of the centres.
    count_init : float > 0, default 100
        The centres' initial counts in the online update (its step is ``1 / count``).

    Attributes
    ----------
    labels_ : (N,) assignments after the final refresh.
    init_labels_ : (N,) nearest k-means centre on the pre-trained embedding.
    cluster_centers_ : (K, e) centres in the embedding.
    history_ : "pretrain_reconstruction" per pre-training epoch; per epoch "reconstruction"
        and "clustering" (the two terms' batch means, unweighted), "loss" (their weighted sum)
        and "delta_label" (the fraction of assignments that changed in the epoch).
    """

    def __init__(
        self,
        n_clusters=10,
        hidden_dims=(500, 500, 2000),
        embedding_size=10,
        pretrain_epochs=300,
        pretrain_optimizer="sgd",
        pretrain_lr=1.0,
        batch_size=256,
        n_init=10,
        lam=1.0,
        beta=1.0,
        lr=1e-4,
        n_epochs=50,
        refresh_every=10,
        count_init=100.0,
        flush_denormal=True,
        device="auto",
        dtype="float32",
        random_state=None,
    ):
        self.n_clusters = n_clusters
        self.hidden_dims = hidden_dims
        self.embedding_size = embedding_size
        self.pretrain_epochs = pretrain_epochs
        self.pretrain_optimizer = pretrain_optimizer
        self.pretrain_lr = pretrain_lr
        self.batch_size = batch_size
        self.n_init = n_init
        self.lam = lam
        self.beta = beta
        self.lr = lr
        self.n_epochs = n_epochs
        self.refresh_every = refresh_every
        self.count_init = count_init
        self.flush_denormal = flush_denormal
        self.device = device
        self.dtype = dtype
        self.random_state = random_state

    _parameter_constraints = {  # a literal: read without importing (mixlib.models)
        "n_clusters": "int >= 1",
        "hidden_dims": "ints >= 1",
        "embedding_size": "int >= 1",
        "pretrain_epochs": "int >= 0",
        "pretrain_optimizer": {"sgd", "adam"},
        "pretrain_lr": "real > 0",
        "batch_size": "int >= 1",
        "n_init": "int >= 1",
        "lam": "real >= 0",
        "beta": "real >= 0",
        "lr": "real > 0",
        "n_epochs": "int >= 1",
        "refresh_every": "int >= 1",
        "count_init": "real > 0",
        "flush_denormal": "bool",
        "device": "str",
        "dtype": {"float32", "float64"},
        "random_state": ["int >= 0", None],
    }

    def _fit(self, X, lab, dev, callback, pretrained, checkpoint):
        total = self.pretrain_epochs + self.n_epochs
        self.history_ = {
            "pretrain_reconstruction": [],
            "loss": [],
            "reconstruction": [],
            "clustering": [],
            "delta_label": [],
        }
        key = self._phase_key(X, lab, checkpoint)
        loop = self._resume_phase(checkpoint, key, X, dev)
        if loop is None:
            Xt, rng, C = self._start(X, lab, dev, total, callback, pretrained, checkpoint)
            order = rng.permutation(Xt.shape[0])  # shuffled once
            assign = self.init_labels_.copy()
            count = np.full(self.n_clusters, float(self.count_init))
        else:
            Xt = self.ae_.as_input(X)
            C, count = loop["centers"].numpy(), loop["count"].numpy()
            order, assign = loop["order"].numpy(), loop["assign"].numpy()
        N, K, bs = Xt.shape[0], self.n_clusters, self.batch_size
        n_batches = max(N // bs, 1)  # the authors' code leaves the last partial batch out
        order_t = torch.as_tensor(order, device=dev)
        biases = [p for n, p in self.ae_.named_parameters() if n.endswith("bias")]
        weights = [p for n, p in self.ae_.named_parameters() if not n.endswith("bias")]
        opt = torch.optim.SGD(
            [{"params": weights, "lr": self.lr}, {"params": biases, "lr": 2.0 * self.lr}],
            lr=self.lr,
            momentum=0.9,
            nesterov=True,  # the authors' p += mu^2 v - (1 + mu) lr g, v = mu v - lr g
        )
        first = 0
        if loop is not None:  # saved after an epoch, as below
            opt.load_state_dict(loop["optimizer"])
            first = int(loop["epoch"])
        for epoch in range(first, self.n_epochs):
            before = assign.copy()
            sums = torch.zeros(2, dtype=Xt.dtype, device=dev)
            for b in range(n_batches):
                rows, rows_t = order[b * bs : (b + 1) * bs], order_t[b * bs : (b + 1) * bs]
                xb = Xt[rows_t]
                target = torch.as_tensor(C[assign[rows]], dtype=Xt.dtype, device=dev)
                zb, xr = self.ae_(xb)
                rec = ((xr - xb) ** 2).sum(1).mean()
                clus = ((zb - target) ** 2).sum(1).mean()
                loss = self.lam * rec + self.beta * clus
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sums += torch.stack([rec.detach(), clus.detach()])
                # online k-means on the batch's new embedding: assign, then move each centre
                # by the running mean of its count (the per-row updates of the authors' code)
                z = self.ae_.embed(xb).double().cpu().numpy()
                lab_b = _sq_dist_direct(z, C).argmin(1)
                cnt, S = cluster_sums(z, lab_b, K)
                C = (count[:, None] * C + S) / (count + cnt)[:, None]
                count += cnt
                assign[rows] = lab_b
            if (epoch + 1) % self.refresh_every == 0 or epoch + 1 == self.n_epochs:
                Z = self.ae_.embed(Xt).double().cpu().numpy()
                C = lloyd(Z, C)
                assign = _sq_dist_direct(Z, C).argmin(1).astype(np.int64)
            rec, clus = (float(v) / n_batches for v in sums)  # one host sync per epoch
            metrics = {
                "loss": self.lam * rec + self.beta * clus,
                "reconstruction": rec,
                "clustering": clus,
                "delta_label": float(np.mean(assign != before)),
            }
            if not all(math.isfinite(v) for v in metrics.values()):
                raise FloatingPointError(f"DCN loss became non-finite: {metrics}")
            for k, v in metrics.items():
                self.history_[k].append(v)
            step, now = self.pretrain_epochs + epoch + 1, assign.copy()
            self._save_phase(
                checkpoint,
                key,
                {
                    "epoch": epoch + 1,
                    "centers": torch.as_tensor(C),
                    "count": torch.as_tensor(count),
                    "order": torch.as_tensor(order),
                    "assign": torch.as_tensor(assign),
                    "optimizer": opt.state_dict(),
                },
            )
            call(callback, Progress(step, total, metrics, labels=lambda y=now: y))
        self.n_iter_ = self.n_epochs
        self.cluster_centers_ = C
        self.labels_ = assign.astype(np.int64)
        return self

    def _soft(self, Xt: torch.Tensor) -> np.ndarray:
        """(N, K) the hard assignment to the nearest centre, one-hot (DCN's k-means has no
        soft one)."""
        Z = self.ae_.embed(Xt).double().cpu().numpy()
        return np.eye(self.n_clusters)[_sq_dist_direct(Z, self.cluster_centers_).argmin(1)]

    def n_parameters(self) -> int:
        """The whole auto-encoder (trained on both terms) and the centres."""
        if not hasattr(self, "cluster_centers_"):
            raise RuntimeError("DCN is not fitted yet; call fit first")
        return int(sum(p.numel() for p in self.ae_.parameters()) + self.cluster_centers_.size)
