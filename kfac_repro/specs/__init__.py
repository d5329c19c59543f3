"""Experiment specs: YAML files in experiments/, their schema, and their resolution into arms for a profile.

Nothing here imports TensorFlow, so `kfac-repro list`, `show` and `validate` answer at once.
"""

from kfac_repro.specs.catalogue import experiments_dir, spec_names, spec_path
from kfac_repro.specs.errors import SpecError
from kfac_repro.specs.resolve import ArmConfig, ResolvedSpec, load_document, load_spec

__all__ = ["ArmConfig", "ResolvedSpec", "SpecError", "experiments_dir", "load_document", "load_spec",
           "spec_names", "spec_path"]
