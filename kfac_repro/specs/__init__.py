"""Experiment specs: YAML files in experiments/, their schema, and their resolution into arms for a profile.

    spec = load_spec("alexnet-bs2048", profile="cpu", overrides=["training.steps=50"])
    spec.arms["kfac"].optimizer["damping"], spec.arms["kfac"].to_dict()

Nothing here imports TensorFlow, so `kfac-repro list`, `show` and `validate` answer at once.
"""

from kfac_repro.specs.catalogue import ENV_VAR, experiments_dir, spec_names, spec_path
from kfac_repro.specs.document import load_document
from kfac_repro.specs.errors import SpecError
from kfac_repro.specs.resolve import ArmConfig, ResolvedSpec, load_spec, profile_names

__all__ = ["ENV_VAR", "ArmConfig", "ResolvedSpec", "SpecError", "experiments_dir", "load_document", "load_spec",
           "profile_names", "spec_names", "spec_path"]
