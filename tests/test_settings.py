"""One declaration of a value: a spec field is a library `Setting` (kfac/config.py) in YAML's words, so the library
config and the spec accept and refuse the same values and describe them alike."""

import dataclasses
import math

import pytest

from kfac_repro.kfac.config import KFACConfig, Setting, SGDConfig, settings
from kfac_repro.specs.fields import Field
from kfac_repro.specs.schema import OPTIMIZERS

PROBES = [True, False, 0, 1, 3, 2.5, -1, 1e30, math.nan, math.inf, "sync", "x", ["fc6"], ("fc6",), [1], None]


@pytest.mark.parametrize(("spec_name", "config_type"), [("kfac", KFACConfig), ("sgd", SGDConfig)])
def test_the_spec_fields_of_an_optimizer_are_its_settings(spec_name: str, config_type: type) -> None:
    for name, declared in settings(config_type).items():
        if name not in OPTIMIZERS[spec_name]:  # set by the runner (seed)
            continue
        field = OPTIMIZERS[spec_name][name]
        assert isinstance(field, Setting)
        for item in dataclasses.fields(Setting):
            assert getattr(field, item.name) == getattr(declared, item.name), f"{name}.{item.name}"


@pytest.mark.parametrize("config_type", [KFACConfig, SGDConfig])
def test_the_library_refuses_exactly_what_the_spec_refuses(config_type: type) -> None:
    """A value the spec's check refuses is refused by the config, with the same words but None for null."""
    for name, declared in settings(config_type).items():
        field = Field.of_setting(declared)
        for value in PROBES:
            if value is None:
                continue  # in a spec, null means the default
            assert declared.admits(value) == field.admits(value), (name, value)
            if not declared.admits(value):
                words = declared.expected().replace("'", "").replace(" or None", "")
                with pytest.raises(ValueError, match=f"^{name}: expected ") as error:
                    config_type(**{name: value})
                assert words.split()[0] in str(error.value)


def test_values_the_library_once_let_through_are_refused() -> None:
    for name, value, words in [("inverse_every", True, "an integer in [1, 1000000000]"),
                               ("inverse_every", 2.5, "an integer in [1, 1000000000]"),
                               ("damping", math.nan, "a number > 0"), ("max_step_size", math.inf, "a number > 0"),
                               ("from_logits", 1, "true or false"), ("skip_layers", ("a", 1), "a tuple of names"),
                               ("doubly_factored", "fc6", "a tuple of names")]:
        with pytest.raises(ValueError, match=f"^{name}: expected {words.replace('[', '.').replace(']', '.')}, "):
            KFACConfig(**{name: value})


def test_the_two_wordings_of_one_declaration() -> None:
    declared = settings(KFACConfig)
    assert declared["inversion"].expected() == "'sync' or 'async'"
    assert Field.of_setting(declared["inversion"]).expected() == "one of sync, async"
    assert declared["async_lag"].expected() == "an integer in [1, 1000000000] or None"
    assert Field.of_setting(declared["async_lag"]).expected() == "an integer in [1, 1000000000] or null"
    assert declared["skip_layers"].expected() == "a tuple of names"
    assert Field.of_setting(declared["skip_layers"]).expected() == "a list of strings"
