"""The spec schema: one declarative table per section of an arm (type, range, choices, default and meaning of
every field). It drives validation (`validation.py`) and the generated reference docs/spec-format.md
(`reference.py`). The optimizer tables mirror the library's KFACConfig / SGDConfig field for field (a test
checks names and defaults), plus the epoch-based intervals that resolution converts to steps."""

from __future__ import annotations

from kfac_repro.data import synthetic
from kfac_repro.data.registry import DATASET_NAMES
from kfac_repro.models.registry import MODEL_NAMES
from kfac_repro.specs.fields import Field

TOP_KEYS = ("name", "description", "figure", "extends", "defaults", "arms", "profiles", "grid")
PROFILE_KEYS = ("description", "defaults", "arms")
DEFAULT_PROFILE = "paper"
# Training-set sizes for converting epochs to steps (a spec's epochs mean the real data set's epochs).
# Upper bounds no machine could run beyond (a typo such as batch_size 1e20 is refused before any work starts).
MAX_BATCH = 1 << 20
MAX_PIXELS = 4096
MAX_CLASSES = 1 << 20
MAX_STEPS = 10**9
MAX_EPOCHS = 1e5
MAX_WORKERS = 4096
MAX_SEEDS = 1000
MAX_THREADS = 4096
NUM_TRAIN = {"cifar10": 50_000, "imagenet": 1_281_167, "fashion_mnist": 60_000, "synthetic": synthetic.SIZES["train"]}

SECTIONS: dict[str, dict[str, Field]] = {
    "model": {
        "name": Field(str, "the network", choices=MODEL_NAMES),
        "input_size": Field(int, "input height and width in pixels (data are resized to it)", minimum=1,
                            maximum=MAX_PIXELS),
        "num_classes": Field(int, "classes of the output layer (must match the data set)", minimum=2,
                             maximum=MAX_CLASSES),
        "width_multiplier": Field(float, "channel width factor (reduced scale: e.g. 0.25)", 1.0, above=0,
                                  maximum=64),
        "batch_norm": Field(bool, "batch normalisation after each conv layer", False),
        "bn_chunk_size": Field(int, "BN statistics per chunk of this many examples (the paper's rbz; 32 is "
                               "standard multi-GPU BN; null: the whole batch)", None, minimum=1, maximum=MAX_BATCH,
                               nullable=True),
        "bn_momentum": Field(float, "decay of the BN moving averages used for evaluation (Keras's 0.99; the paper "
                             "does not say)", 0.99, above=0, below=1),
        "stem": Field(str, "alexnet/googlenet/resnet: 'paper' or 'reduced' stem (null: by input size)", None,
                      choices=("paper", "reduced"), nullable=True),
        "dropout": Field(float, "alexnet/googlenet: dropout rate before the classifier (null: the model's own)",
                         None, minimum=0, below=1, nullable=True),
        "aux_heads": Field(bool, "googlenet: auxiliary classifier heads (null: the model's own)", None,
                           nullable=True),
    },
    "data": {
        "name": Field(str, "the data set", choices=DATASET_NAMES),
        "data_dir": Field(str, "data directory (null: $KFAC_REPRO_DATA or ~/.kfac_repro/data)", None, nullable=True),
        "augment": Field(bool, "random resize-and-crop (null: on for ImageNet training only)", None, nullable=True),
        "holdout": Field(int, "cifar10/fashion_mnist: the last N training examples are the validation split (the "
                         "runs are tuned and judged on it) and the test split is only reported, at the end of the "
                         "run; 0: the test split is the validation split", 0, minimum=0,
                         maximum=max(NUM_TRAIN.values())),
    },
    "training": {
        "batch_size": Field(int, "global mini-batch size (split over the gradient workers)", minimum=1,
                            maximum=MAX_BATCH),
        "steps": Field(int, "parameter updates; or give `epochs` instead", minimum=1, maximum=MAX_STEPS),
        "epochs": Field(float, "passes over the training set instead of `steps`", None, above=0,
                        maximum=MAX_EPOCHS, nullable=True,
                        epochs_of="steps"),
        "log_every": Field(int, "steps between metrics rows", 10, minimum=1, maximum=MAX_STEPS),
        "eval_every": Field(int, "steps between validation passes (a multiple of log_every)", 50, minimum=1,
                            maximum=MAX_STEPS),
        "eval_batches": Field(int, "validation batches per pass", 10, minimum=1, maximum=MAX_STEPS),
        "checkpoint_every": Field(int, "steps between checkpoints", 200, minimum=1, maximum=MAX_STEPS),
        "seed": Field(int, "random seed (weights, data order, sampled targets)", 0, minimum=0, maximum=2**32 - 1),
        "seeds": Field(int, "`kfac-repro run` trains each arm with this many seeds, seed, seed + 1, …, each in its "
                       "own run directory <run-id>-seed<S> (1: one run, named without a seed)", 1, minimum=1,
                       maximum=MAX_SEEDS),
        "deterministic": Field(bool, "TensorFlow op determinism (bitwise-repeatable runs)", True),
        "divergence_factor": Field(float, "the run ends `diverged` when a logged training loss exceeds this × "
                                   "(|first logged loss| + 1) (NaN or inf: always)", 10.0, above=1),
    },
    "distribution": {
        "workers": Field(int, "gradient workers (replicas); the batch is split across them", 1, minimum=1,
                         maximum=MAX_WORKERS),
    },
}

_LIKELIHOOD = Field(str, "the output distribution of the model", "categorical", choices=("categorical", "gaussian"))
_FROM_LOGITS = Field(bool, "the model outputs logits (not probabilities)", True)
_MOMENTUM = Field(float, "momentum μ (the paper: 0.9 for every method)", 0.9, minimum=0, below=1)
_WEIGHT_DECAY = Field(float, "L2 coefficient (K-FAC: also folded into the damping)", 0.0, minimum=0)
_POLYAK = Field(float, "decay of the exponential Polyak average of the weights used for evaluation "
                "(null: raw weights)", None, minimum=0, below=1, nullable=True)

OPTIMIZERS: dict[str, dict[str, Field]] = {
    "kfac": {
        "damping": Field(float, "λ: factored Tikhonov damping", 1e-3, above=0),
        "weight_decay": _WEIGHT_DECAY,
        "momentum": _MOMENTUM,
        "kl_clip": Field(float, "c₀: bound on the update's squared Fisher norm, η = min(η_max, √(c/vᵀg)) (Eq. 14)",
                         0.01, above=0),
        "max_step_size": Field(float, "η_max: the largest step size", 1.0, above=0),
        "kl_bound": Field(str, "update: the bound holds for the momentum-summed update (the buffer receives "
                          "(1 − μ)·η·v, as in Ba's released code); increment: for η·v before momentum (our earlier "
                          "rule: the update's KL reaches c/(1 − μ)²)", "increment", choices=("update", "increment")),
        "decay_rate": Field(float, "ζ: c (or η_max) is multiplied by ζ every `decay_every` steps", 0.96,
                            above=0, maximum=1),
        "decay_every": Field(int, "steps between decays (null: no decay)", None, minimum=1, maximum=MAX_STEPS,
                             nullable=True),
        "decay_every_epochs": Field(float, "`decay_every` in epochs (the paper: 0.5 on ImageNet)", None, above=0,
                                    maximum=MAX_EPOCHS,
                                    nullable=True, epochs_of="decay_every"),
        "decay_target": Field(str, "kl: decay c (the paper); lr: decay η_max with c fixed (Fig. 8's decayLR)",
                              "kl", choices=("kl", "lr")),
        "stats_decay": Field(float, "largest decay of the factors' moving averages, min(1 − 1/k, ·)", 0.95,
                             minimum=0, below=1),
        "stats_every": Field(int, "steps between statistics updates", 1, minimum=1, maximum=MAX_STEPS),
        "stats_batch_size": Field(int, "statistics from a separate pass on this many examples, standing in for the "
                                  "dedicated stats worker (null: from the training pass)", None, minimum=1,
                                  maximum=MAX_BATCH, nullable=True),
        "inverse_every": Field(int, "steps between inverse refreshes (sync inversion)", 20, minimum=1,
                               maximum=MAX_STEPS),
        "inversion": Field(str, "sync: refresh every `inverse_every` steps; async: background inversions, "
                           "used stale", "sync", choices=("sync", "async")),
        "async_lag": Field(int, "async: steps between a factor snapshot and its inverse's use (null: the next "
                           "step after every worker has finished its share)", None, minimum=1, maximum=MAX_STEPS,
                           nullable=True),
        "inversion_threads": Field(int, "BLAS/LAPACK threads of the host inversion; the runner gives TensorFlow "
                                   "the other cores (null: no limit, no reservation)", None, minimum=1,
                                   maximum=MAX_THREADS, nullable=True),
        "inversion_device": Field(str, "host: numpy LAPACK; accelerator: tf.linalg on each replica's device",
                                  "host", choices=("host", "accelerator")),
        "conv_factors": Field(str, "conv blocks: cheap (App. A) or kfc", "cheap", choices=("cheap", "kfc")),
        "sequence_factors": Field(str, "Dense/EinsumDense applied over sequence positions: expand or reduce "
                                  "(Eschenhagen et al. 2023; convolutions follow conv_factors)", "expand",
                                  choices=("expand", "reduce")),
        "inverse_dtype": Field(str, "precision of the damped factors' Cholesky inverses (float32 retried in float64 "
                               "on failure)", "float32", choices=("float32", "float64")),
        "fisher_targets": Field(str, "sample: targets drawn from the model (true Fisher); exact: expectation over "
                                "classes", "sample", choices=("sample", "exact")),
        "likelihood": _LIKELIHOOD,
        "from_logits": _FROM_LOGITS,
        "exact_block_max": Field(int, "largest vector block kept exact (larger: diagonal)", 1024, minimum=0,
                                 maximum=1 << 16),
        "doubly_factored": Field(list, "layers given doubly-factored blocks (paper §4; AlexNet: [fc6])", ()),
        "doubly_factored_min_inputs": Field(int, "also doubly-factor every eligible layer with at least this many "
                                            "inputs (null: only the named ones)", None, minimum=1,
                                            maximum=1 << 30, nullable=True),
        "skip_layers": Field(list, "layers left unpreconditioned: names or glob patterns (fnmatch)", ()),
        "polyak_decay": _POLYAK,
    },
    "sgd": {
        "learning_rate": Field(float, "initial learning rate", 0.1, above=0),
        "momentum": _MOMENTUM,
        "weight_decay": _WEIGHT_DECAY,
        "lr_decay_rate": Field(float, "the learning rate is multiplied by this every `lr_decay_every` steps", 1.0,
                               above=0, maximum=1),
        "lr_decay_every": Field(int, "steps between decays (null: constant)", None, minimum=1,
                                maximum=MAX_STEPS, nullable=True),
        "lr_decay_every_epochs": Field(float, "`lr_decay_every` in epochs (the paper: 0.5 with BN, 2 without)",
                                       None, above=0, maximum=MAX_EPOCHS, nullable=True, epochs_of="lr_decay_every"),
        "likelihood": _LIKELIHOOD,
        "from_logits": _FROM_LOGITS,
        "polyak_decay": _POLYAK,
    },
}
OPTIMIZER_NAME = Field(str, "the optimizer; its fields are listed below", choices=tuple(OPTIMIZERS))
ARM_SECTIONS = (*SECTIONS, "optimizer")
ARM_KEYS = ("label", *ARM_SECTIONS)


def section_fields(section: str, optimizer: str | None = None) -> dict[str, Field]:
    """The fields of a section; for `optimizer`, those of the named optimizer (every optimizer's when None)."""
    if section != "optimizer":
        return SECTIONS[section]
    if optimizer is not None:
        return {"name": OPTIMIZER_NAME, **OPTIMIZERS[optimizer]}
    merged = {"name": OPTIMIZER_NAME}
    for fields in OPTIMIZERS.values():
        merged.update(fields)
    return merged
