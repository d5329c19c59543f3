"""The spec schema: one declarative table per section of an arm (type, range, choices, default and meaning of
every field). It drives validation (`validation.py`) and the generated reference docs/spec-format.md
(`reference.py`). The optimizer tables are derived from the library's KFACConfig / SGDConfig, where each setting
is declared once (kfac_repro/kfac/config.py), plus the epoch-based intervals that resolution converts to steps."""

from __future__ import annotations

from kfac_repro.data import synthetic
from kfac_repro.data.registry import DATASET_NAMES
from kfac_repro.kfac.config import MAX_BATCH, MAX_STEPS, KFACConfig, SGDConfig, settings
from kfac_repro.models.registry import MODEL_NAMES
from kfac_repro.specs.fields import Field

TOP_KEYS = ("name", "description", "figure", "extends", "defaults", "arms", "profiles", "grid", "tuned")
PROFILE_KEYS = ("description", "defaults", "arms")
DEFAULT_PROFILE = "paper"
# Upper bounds no machine could run beyond (a typo such as batch_size 1e20 is refused before any work starts);
# MAX_STEPS and MAX_BATCH are the library's (kfac/config.py).
MAX_PIXELS = 4096
MAX_CLASSES = 1 << 20
MAX_EPOCHS = 1e5
MAX_WORKERS = 4096
MAX_SEEDS = 1000
# Training-set sizes for converting epochs to steps (a spec's epochs mean the real data set's epochs).
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
        "residual": Field(bool, "standin: a residual stage 3 (ResNet-50's stand-in; null: plain)", None,
                          nullable=True),
        "fc6": Field(int, "standin: width of a Dense 'fc6' over the flattened map (AlexNet's stand-in; null: none)",
                     None, minimum=1, maximum=1 << 16, nullable=True),
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
        "eval_batches": Field(int, "validation batches per pass (null: the whole validation split; each pass also "
                              "evaluates as many whole batches of training examples in inference mode)", None,
                              minimum=1, maximum=MAX_STEPS, nullable=True),
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

CONFIGS: dict[str, type] = {"kfac": KFACConfig, "sgd": SGDConfig}  # an optimizer's settings, by spec name
RUNNER_SET = ("seed",)  # settings the runner gives (training.seed seeds the optimizer too), not spec fields
# Spec-only aliases: a steps setting given in epochs (converted when an arm is resolved), listed after it.
EPOCH_ALIASES: dict[str, dict[str, Field]] = {
    "kfac": {"decay_every_epochs": Field(float, "`decay_every` in epochs (the paper: 0.5 on ImageNet)", None,
                                         above=0, maximum=MAX_EPOCHS, nullable=True, epochs_of="decay_every")},
    "sgd": {"lr_decay_every_epochs": Field(float, "`lr_decay_every` in epochs (the paper: 0.5 with BN, 2 without)",
                                           None, above=0, maximum=MAX_EPOCHS, nullable=True,
                                           epochs_of="lr_decay_every")},
}


def optimizer_fields(config_type: type, aliases: dict[str, Field] | None = None) -> dict[str, Field]:
    """The spec fields of an optimizer: its config's settings (default, bounds, meaning), each followed by its
    epoch alias if any."""
    derived: dict[str, Field] = {}
    for name, declared in settings(config_type).items():
        if name in RUNNER_SET:
            continue
        derived[name] = Field.of_setting(declared)
        derived.update({alias: f for alias, f in (aliases or {}).items() if f.epochs_of == name})
    return derived


OPTIMIZERS: dict[str, dict[str, Field]] = {
    name: optimizer_fields(config, EPOCH_ALIASES.get(name)) for name, config in CONFIGS.items()}
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
