"""K-FAC as a Keras 3 optimizer: `model.compile(optimizer=KFAC(model), loss=...)`, then `fit` as usual; a thin
front end over the engine the host loop (`kfac_repro.kfac.KFAC`) runs, taking the same steps in the same order.

Keras's traced train step does the forward pass (through the K-FAC layer taps, installed for the optimizer's
lifetime) and hands the optimizer the gradients; `apply`, traced into the same graph on every replica, then
back-propagates the Fisher cotangents, times √ of the loss's sample weights (from the tapped `compute_loss`), from
the recorded model output to the recorded pre-activations (`tf.gradients`: no second forward pass). On the first
step (no inverses yet) their factors are folded in and inverted first, as the host loop's first step does; the step
boundary runs the refresh engine through the bridge (`keras.refresh`); then the batch factors (with
`stats_batch_size` m: of a separate pass on the first m inputs, as in the host loop) are folded into the moving
averages (every `stats_every` steps; not at all when they are not finite), the all-reduced gradient is
preconditioned, η = learning_rate · min(1, √(kl_clip / vᵀg)) (Eq. 14 with η_max = 1, scaled by the learning rate, so
that a schedule or callback that changes it changes the step) and the update rule of `kfac.update` applied."""

from __future__ import annotations

import dataclasses
import functools
import math
import weakref
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kfac_repro.keras.adapter import check_keras, track_variable, untrack_variables
from kfac_repro.keras.capture import GraphTaps
from kfac_repro.keras.losses import LossLikelihood, likelihood_of
from kfac_repro.keras.refresh import GraphRefresh
from kfac_repro.kfac.base import check_same_variables
from kfac_repro.kfac.config import KFACConfig
from kfac_repro.kfac.preconditioner import Preconditioner
from kfac_repro.kfac.replicas import all_reduce_mean, assign_all, every_replica
from kfac_repro.kfac.update import UpdateRule

# The Keras API's defaults where they differ from KFACConfig's (the paper's); every other setting means what it means
# in KFACConfig. A damping of 0.1 relative to factors of order 1 keeps the first steps, taken with freshly estimated
# factors, from blowing up (the paper's 1e-3 leaves a small CNN at chance). The paper's amortisation, statistics every
# 10 steps and inverses every 50, and the paper's c = 0.01 at a batch of 1024, scaled with the batch (0.00125 at 128):
# chosen from the Keras suite's tuning runs (README, "Defaults"). The KL bound on η·v before momentum ("increment",
# unlike the core's default "update"): with η_max = learning_rate = 1, "update" also caps the summed step at a tenth,
# and fit then trained the test MLP more slowly than SGD with momentum in 36 steps.
# With inversion "async", async_lag defaults to inverse_every (`keras_config`): pinned, so that a resumed fit equals
# the uninterrupted one; async_lag=None chooses the free-running hand-over, whose steps depend on timing.
KERAS_DEFAULTS: dict[str, Any] = {"damping": 0.1, "kl_clip_batch": 1024, "kl_bound": "increment", "stats_every": 10,
                                  "inverse_every": 50}
# KFACConfig settings that cannot apply to an optimizer inside fit, refused by name with what stands for them.
NOT_IN_FIT: dict[str, str] = {
    "likelihood": "the likelihood comes from the compiled loss",
    "from_logits": "the likelihood comes from the compiled loss",
    "max_step_size": "η_max is 1 and the learning_rate (a float or a Keras schedule) scales the step",
    "polyak_decay": "fit evaluates the raw weights",
    **dict.fromkeys(("damping_adaptation_every", "damping_min", "damping_max"),
                    "the adaptive damping runs in the host loop (kfac_repro.kfac.KFAC) only; fit's damping is fixed"),
}
# Keras's own optimizer options, handled by Keras's `apply` around K-FAC's update (`_backend_update_step`).
KERAS_OPTIONS = ("clipnorm", "clipvalue", "global_clipnorm", "use_ema", "ema_momentum", "ema_overwrite_frequency",
                 "gradient_accumulation_steps", "loss_scale_factor")
# Refused when a KFAC is made in a strategy of several replicas, and in the step (whatever made it).
ACCUMULATION_ON_REPLICAS = (
    "KFAC: gradient_accumulation_steps works on one replica only: Keras applies the accumulated update inside a "
    "conditional, where tf.distribute cannot synchronise replicas (Keras's own optimizers fail there too, "
    "keras-team/keras#20582); use a larger batch across the replicas instead")
_NAME_LISTS = ("doubly_factored", "skip_layers")  # settings holding layer names: tuples here, lists in a config
_ATTACHED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> the KFAC whose taps it carries


class _Binding:
    """Everything tied to one model (kept out of Keras's attribute tracking: the model is not optimizer state)."""

    def __init__(self, model: keras.Model, config: KFACConfig, owned: list | None = None,
                 taps: GraphTaps | None = None):
        """`owned`: the variables K-FAC trains (None: all); `taps`: installed taps to keep (recording at least the
        blocks' layers)."""
        self.model = model
        self.config = config
        self.trainable = list(model.trainable_variables)
        self.preconditioner = Preconditioner(model, config, owned=owned)
        pre = self.preconditioner
        self.taps = taps or GraphTaps(model, [b.layer for b in pre.blocks if b.taps_preactivation],
                                      [b.layer for b in pre.blocks if not b.taps_preactivation])
        pre.taps = self.taps
        self.refresh = GraphRefresh(pre, config)
        self.loss: LossLikelihood | None = None
        # the last update's step size and whether the KL bound set it (read by `KFACDiagnostics`; not checkpointed)
        self.last_step = {key: tf.Variable(0.0, trainable=False, name=f"last_{key}")
                          for key in ("step_size", "kl_bound_set")}
        self.supports_jit = True  # the model's own flag, restored by `close`

    def check_variables(self, variables: list) -> None:
        """The variables Keras trains must be those K-FAC was built for (`trainable` unchanged since)."""
        check_same_variables(self.model, self.trainable, variables)

    def owns_part(self, variables: list) -> bool:
        """`variables` are some of the model's unchanged trainable variables (an OptimizerMap gave K-FAC these)."""
        mine = {id(v) for v in variables}
        return ([id(v) for v in self.model.trainable_variables] == [id(v) for v in self.trainable]
                and mine < {id(v) for v in self.trainable} and mine != {id(v) for v in self.preconditioner.params})

    def bind_loss(self) -> LossLikelihood:
        loss = likelihood_of(self.model)
        if loss != self.loss:
            self.loss = loss
            self.preconditioner.likelihood = loss.likelihood
            self.preconditioner.from_logits = loss.from_logits
        return loss


@keras.saving.register_keras_serializable(package="kfac_repro")
class KFAC(keras.optimizers.Optimizer):
    """K-FAC for `model.fit`. `learning_rate` s scales the step, η = s · min(1, √(kl_clip / vᵀg)) (1.0: the paper's
    Eq. 14 with η_max = 1; Keras LR schedules and callbacks change it, and the step with it, in proportion);
    `settings` are KFACConfig fields, meaning what they mean in the host loop, with the defaults `KERAS_DEFAULTS`
    overrides (those in `NOT_IN_FIT` are refused), and Keras's own options (`KERAS_OPTIONS`: clipping, EMA,
    gradient accumulation, loss scaling). Not supported: `run_eagerly=True`, `jit_compile=True`."""

    def __init__(self, model: keras.Model | None = None, learning_rate: Any = 1.0, name: str = "kfac",
                 **settings: Any):
        check_keras()
        options = {key: settings.pop(key) for key in KERAS_OPTIONS if key in settings}
        refused = sorted(set(settings) & set(NOT_IN_FIT))
        if refused:
            raise TypeError("KFAC: " + "; ".join(f"{key} does not apply in fit: {NOT_IN_FIT[key]}" for key in refused))
        known = [key for key in (f.name for f in dataclasses.fields(KFACConfig)) if key not in NOT_IN_FIT]
        unknown = set(settings) - set(known)
        if unknown:
            raise TypeError(f"KFAC: unknown setting(s) {sorted(unknown)}; the Keras optimizer takes {sorted(known)}")
        if settings.get("decay_target") == "lr":
            raise TypeError("KFAC: decay_target 'lr' does not apply in fit: give learning_rate a Keras schedule")
        super().__init__(learning_rate=float(learning_rate) if isinstance(learning_rate, int) else learning_rate,
                         name=name, **options)
        if self.gradient_accumulation_steps and tf.distribute.get_strategy().num_replicas_in_sync > 1:
            raise ValueError(ACCUMULATION_ON_REPLICAS)
        self.config = keras_config(settings)
        self.settings = {key: getattr(self.config, key) for key in known}
        self._binding: _Binding | None = None
        self._velocity: list = []
        self._stashed: list[np.ndarray] | None = None  # saved state loaded before `attach`
        if model is not None:
            self.attach(model)

    # ---- the model ---------------------------------------------------------------------------------------------
    def attach(self, model: keras.Model) -> None:
        """Register `model`'s layers, create K-FAC's state and install the layer taps (done by the constructor;
        call it yourself only for an optimizer deserialized without its model)."""
        if self._binding is not None:
            raise ValueError(f"this K-FAC optimizer is already attached to model {self._binding.model.name!r}")
        if not model.built:
            raise ValueError(f"model {model.name!r} is not built: call it once or give it an Input before KFAC(model)")
        owner = next((v.value.distribute_strategy for v in model.weights
                      if isinstance(v.value, tf.distribute.DistributedValues)), tf.distribute.get_strategy())
        if owner is not tf.distribute.get_strategy():
            raise ValueError(f"model {model.name!r} was built in a {type(owner).__name__}'s scope: make KFAC(model) "
                             "(and compile) inside that `strategy.scope()` too")
        previous = _ATTACHED.get(model)
        if previous is not None:
            previous.close()
        self._bind(_Binding(model, self.config))

    def _bind(self, binding: _Binding) -> None:
        model = binding.model
        with keras.name_scope(self.name, caller=self):
            self._velocity = [self.add_variable_from_reference(p, name="velocity")
                              for p in binding.preconditioner.params]
        state = [*binding.preconditioner.variables(), *binding.refresh.variables]
        for variable in state:
            track_variable(self, variable)
        if self._binding is None:
            binding.taps.__enter__()
            binding.supports_jit = model.supports_jit
        else:  # rebuilt for part of the model: the taps stay, the model's own flag is the first binding's
            binding.supports_jit = self._binding.supports_jit
        model.supports_jit = False  # host inversions (tf.numpy_function): Keras then resolves jit_compile to False
        if getattr(model, "compiled", False) and model.jit_compile:
            model.jit_compile = False
        self._binding = binding
        _ATTACHED[model] = self
        if self.built:
            self._restore_stashed()

    def close(self) -> None:
        """Remove the layer taps and stop background inversion (the optimizer cannot train after this)."""
        binding = self._binding
        if binding is None:
            return
        binding.taps.__exit__(None, None, None)
        binding.model.supports_jit = binding.supports_jit
        binding.refresh.close()
        _ATTACHED.pop(binding.model, None)

    @property
    def refresh_period(self) -> int:
        """Steps after which the schedule of statistics and inverse refreshes repeats: lcm(stats_every,
        inverse_every). A timing over whole periods counts every refresh as often as training does."""
        return math.lcm(self.config.stats_every, self.config.inverse_every)

    @property
    def preconditioner(self) -> Preconditioner:
        """The K-FAC preconditioner (blocks, `summary()`, `factors()`)."""
        return self._require_binding().preconditioner

    def summary(self) -> str:
        """Each layer, its block type and factor shapes."""
        return self.preconditioner.summary()

    def last_step(self) -> dict[str, Any]:
        """The last update's step size η and whether the KL bound set it (1.0) or the cap did (0.0); the damping λ
        of the inverses (damping + weight_decay); the step of the installed inverses' statistics
        (`inverse_source`, −1 before any); the refreshes installed so far (`kfac.inversion.refresh.Refresh`:
        snapshot step, step installed at, seconds) and the seconds steps waited for background inversions."""
        binding = self._require_binding()
        engine = binding.refresh.engine
        return {**{key: float(variable.numpy()) for key, variable in binding.last_step.items()},
                "damping": engine.inversion.damping, "inverse_source": int(binding.refresh.inverse_source.numpy()),
                "refreshes": list(engine.history), "waited_seconds": engine.waited_seconds}

    def _require_binding(self) -> _Binding:
        if self._binding is None:
            raise ValueError("this K-FAC optimizer has no model: it was deserialized without one. Load models with "
                             "kfac_repro.keras.load_model(path), or call optimizer.attach(model) before training")
        return self._binding

    # ---- Keras optimizer API -----------------------------------------------------------------------------------
    def build(self, variables: list) -> None:
        """Keras builds the optimizer before training: check the variables and the compiled loss now. Given some of
        the model's variables (inside a MultiOptimizer), K-FAC is rebuilt for those: the layers whose variables
        are all among them get blocks, their statistics alone are computed."""
        if self._binding is not None:
            model, ours = self._binding.model, {id(v) for v in self._binding.trainable}
            foreign = [v.path for v in variables if id(v) not in ours]
            if foreign and [id(v) for v in model.trainable_variables] == [id(v) for v in self._binding.trainable]:
                raise ValueError(f"this K-FAC optimizer was made for model {model.name!r}, and {foreign[:3]} are not "
                                 "its variables: give the model you compile its own KFAC(model)")
        if self._binding is not None and not self.built and self._binding.owns_part(list(variables)):
            old = self._binding  # Keras builds it in the traced step, after the forward pass: keep its taps
            old.refresh.close()
            untrack_variables(self, [*self._velocity, *old.preconditioner.variables(), *old.refresh.variables])
            self._bind(_Binding(old.model, self.config, owned=list(variables), taps=old.taps))
        if self._binding is not None:
            model = self._binding.model
            self._binding.check_variables(list(model.trainable_variables))
            if getattr(model, "loss", None) is not None:
                self._binding.bind_loss()
        elif not variables:  # Keras's .h5 loader gives a Sequential/Functional model's own variables (none)
            return  # built when attached (kfac_repro.keras.load_model), for the model's variables
        super().build(variables)
        self._restore_stashed()

    def _restore_stashed(self) -> None:
        """Assign the state loaded before the optimizer had its model, once it is attached and built."""
        if self._stashed is not None and self._binding is not None:
            stashed, self._stashed = self._stashed, None
            self.set_weights(stashed)

    def _backend_update_step(self, grads: Any, trainable_variables: Any, learning_rate: Any) -> None:
        """K-FAC's update, in place of Keras's per-variable `update_step`: Keras's `apply` has already unscaled,
        accumulated and clipped the gradients, and then updates the EMA and the step count."""
        binding = self._require_binding()
        binding.check_variables(list(binding.model.trainable_variables))
        if tf.executing_eagerly():
            raise RuntimeError("K-FAC needs fit's traced train step: compile without run_eagerly=True")
        if getattr(binding.model, "jit_compile", False):
            raise RuntimeError("K-FAC inverts its factors on the host, which XLA cannot compile: compile with "
                               "jit_compile=False")
        loss = binding.bind_loss()
        context = tf.distribute.get_replica_context()
        if context is None:
            raise RuntimeError("K-FAC's apply must run in a replica context (inside fit's train step)")
        if self.gradient_accumulation_steps and context.num_replicas_in_sync > 1:
            raise RuntimeError(ACCUMULATION_ON_REPLICAS)
        pre = binding.preconditioner
        params = pre.params
        given = {id(v): g for g, v in zip(grads, trainable_variables, strict=True)}  # Keras drops None gradients
        rule = UpdateRule(self.config.momentum, self.config.weight_decay, self.config.kl_bound)
        # Keras scales each replica's loss by 1/replicas: the sum over replicas is the mean gradient
        grads = rule.gradients([given.get(id(p)) for p in params], params,
                               functools.partial(_sum_over_replicas, context))
        step = tf.convert_to_tensor(self.iterations)  # K-FAC's step: the update's index (Keras: under accumulation)
        refresh = binding.refresh
        outputs = self._outputs(binding, loss)
        calls = pre.recorded_calls()
        weights = binding.taps.sample_weights()  # Keras's sample weights (class_weight among them), or None
        weight = weights[-1] if weights else None
        statistics = functools.partial(pre.local_batch_factors, outputs, _graph_gradient, calls, weight)
        first = refresh.uninitialised  # the first inverses come from statistics of their own, as in the host loop
        self._update_statistics(pre, statistics, first)
        context.merge_call(lambda _: refresh.boundary(step, first))
        every, sub = self.config.stats_every, self.config.stats_batch_size
        if sub is not None:  # a separate pass on the first `sub` examples of the step's inputs, as the host loop's
            inputs = tf.nest.map_structure(lambda t: t[:sub], binding.taps.model_calls()[-1].inputs)
            statistics = functools.partial(pre.local_statistics_pass, inputs, None if weight is None else weight[:sub])
        self._update_statistics(pre, statistics, None if every == 1 else tf.equal(step % every, 0))
        binding.taps.clear()
        if refresh.background:  # this worker's share finished: the flag a free-running policy listens to
            assign_all([refresh.all_ready], [_all_replicas(context, refresh.local_ready())])
        direction = pre.precondition(grads)
        # this replica's examples in the update: its batch times the batches Keras accumulated into it
        examples = tf.shape(outputs)[0] * (self.gradient_accumulation_steps or 1)
        scale = pre.step_size(direction, grads, step, examples, tf.cast(learning_rate, tf.float32))
        pairs, _ = rule.assignments(params, self._velocity, direction, scale["step_size"])
        pairs += [(binding.last_step[key], scale[key]) for key in binding.last_step]
        assign_all([v for v, _ in pairs], [value for _, value in pairs])

    @staticmethod
    def _outputs(binding: _Binding, loss: LossLikelihood) -> tf.Tensor:
        """The model's output in this train step, checked; sets the cotangent scale of the compiled loss."""
        model_calls = binding.taps.model_calls()
        if not model_calls:
            raise RuntimeError(f"K-FAC found no forward pass of model {binding.model.name!r} in this train step: "
                               "the model's train_step must call the model it was built for")
        outputs = model_calls[-1].point
        if not isinstance(outputs, tf.Tensor):
            raise ValueError(f"K-FAC supports models with one output tensor; {binding.model.name!r} returns "
                             f"{type(outputs).__name__}")
        if loss.likelihood == "categorical" and outputs.shape.rank != 2:
            raise ValueError(f"categorical cross-entropy: K-FAC needs [batch, classes] outputs, model "
                             f"{binding.model.name!r} gives {outputs.shape}")
        if not outputs.shape[1:].is_fully_defined():
            raise ValueError(f"K-FAC needs the output shape of model {binding.model.name!r} known, found "
                             f"{outputs.shape}")
        binding.preconditioner.cotangent_scale = loss.cotangent_scale(outputs.shape[1:].num_elements())
        return outputs

    @staticmethod
    def _update_statistics(pre: Preconditioner, statistics: Callable[[], list[tf.Tensor]],
                           when: tf.Tensor | None) -> None:
        """Fold this step's batch factors (`statistics()`) into the moving averages (only where `when` holds, if
        given). A batch whose all-reduced factors are not finite (a NaN or infinite input or output) leaves them as
        they were: the weights' fate is the user's, the curvature's stays usable."""

        def fold(local: list[tf.Tensor], apply: tf.Tensor | None) -> tf.Tensor:
            batch = all_reduce_mean(local)
            keep = tf.reduce_all([tf.reduce_all(tf.math.is_finite(value)) for value in batch])
            keep = keep if apply is None else tf.logical_and(keep, apply)
            pairs = pre.factor_assignments(batch)
            assign_all([v for v, _ in pairs], [tf.where(keep, value, tf.convert_to_tensor(v)) for v, value in pairs])
            return keep

        if when is None:
            fold(statistics(), None)
        elif tf.distribute.get_replica_context().num_replicas_in_sync == 1:  # all of it skipped when not `when`
            tf.cond(when, lambda: fold(statistics(), None), lambda: tf.constant(False))
        else:  # the all-reduce cannot sit in a conditional: the replicas reduce zeros when not `when`
            factors = [var for block in pre.blocks for var in block.statistics.values()]
            fold(tf.cond(when, statistics, lambda: [tf.zeros(f.shape, f.dtype) for f in factors]), when)

    @property
    def variables(self) -> list:
        """Keras's optimizer variables, then K-FAC's own (velocities, factors, inverses, refresh state): the order
        saved and restored (`.keras`, `.h5`, `set_weights`), whether Keras built it before or after `attach`."""
        binding = self._binding
        own = [*self._velocity, *binding.preconditioner.variables(), *binding.refresh.variables] if binding else []
        ids = {id(v) for v in own}
        return [v for v in super().variables if id(v) not in ids] + own

    def set_weights(self, weights: list) -> None:
        """Assign `weights` (arrays in the order of `variables`) to `variables`; an optimizer without its model
        (loaded from a file) keeps them until it is attached and built."""
        if self._binding is None:
            self._stashed = [np.array(w) for w in weights]
            return
        variables = self.variables
        if len(weights) != len(variables):
            raise ValueError(f"K-FAC optimizer {self.name!r} has {len(variables)} variables, given {len(weights)} "
                             f"arrays: the state saved is not of this model and these settings")
        for variable, value in zip(variables, weights, strict=True):
            if tuple(variable.shape) != np.shape(value):
                raise ValueError(f"K-FAC optimizer variable {variable.path} has shape {tuple(variable.shape)}, the "
                                 f"saved value {np.shape(value)}")
        for variable, value in zip(variables, weights, strict=True):
            variable.assign(value)

    def save_own_variables(self, store: Any) -> None:
        self._require_binding()
        super().save_own_variables(store)

    def load_own_variables(self, store: Any) -> None:
        """Restore K-FAC's state (saved by `save_own_variables`, keyed by position in `variables`)."""
        self.set_weights([store[str(i)] for i in range(len(store.keys()))])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        kept = {key: config[key] for key in ("name", "learning_rate", *KERAS_OPTIONS) if key in config}
        return {**kept, **self.settings, **{key: list(self.settings[key]) for key in _NAME_LISTS}}

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> KFAC:
        config = dict(config)
        config.update({key: tuple(config.get(key, ())) for key in _NAME_LISTS})
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = keras.optimizers.schedules.deserialize(config["learning_rate"],
                                                                             custom_objects=custom_objects)
        return cls(model=None, **config)


def keras_config(settings: dict[str, Any]) -> KFACConfig:
    """The KFACConfig of the Keras optimizer's `settings`: KERAS_DEFAULTS where a setting is not given."""
    given = {**KERAS_DEFAULTS, **settings}
    if given.get("inversion") == "async" and "async_lag" not in settings:
        given["async_lag"] = given["inverse_every"]
    return KFACConfig(**given)


def _all_replicas(context: tf.distribute.ReplicaContext, flag: tf.Tensor) -> tf.Tensor:
    """Whether every replica's `flag` (0.0 or 1.0) is 1.0 (`every_replica` of their mean)."""
    replicas = context.num_replicas_in_sync
    mean = flag if replicas == 1 else context.all_reduce(tf.distribute.ReduceOp.MEAN, flag)
    return every_replica(mean, replicas)


def _sum_over_replicas(context: tf.distribute.ReplicaContext, values: list[tf.Tensor]) -> list[tf.Tensor]:
    if context.num_replicas_in_sync == 1:
        return values
    return list(context.all_reduce(tf.distribute.ReduceOp.SUM, values))


def _graph_gradient(target: tf.Tensor, sources: list[tf.Tensor], cotangent: tf.Tensor) -> list[tf.Tensor]:
    """d target / d sources with `cotangent` as the target's output gradient, through the traced forward pass."""
    return tf.gradients(target, sources, grad_ys=cotangent)
