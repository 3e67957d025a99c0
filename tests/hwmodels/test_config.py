"""Fitted constants: hwmodels/fitted.json overrides the fields a config marks as FITTED."""

import json

import pytest

from hwmodels import config, estimate
from hwmodels.softex import SOFTEX
from hwmodels.workload import Op, Workload

PRODUCT = Workload((Op("matmul", "mm", "", 1, 128, 64, 128),))


def test_no_file_means_defaults(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "FITTED_PATH", tmp_path / "fitted.json")
    assert config.load_fitted("softex") == {}
    assert config.fitted_config(SOFTEX, "softex") is SOFTEX
    assert estimate(PRODUCT, "softex").total_cycles == 6069  # 128·64·128/(192·0.9), rounded up


def test_fitted_values_are_loaded(tmp_path, monkeypatch):
    path = tmp_path / "fitted.json"
    path.write_text(
        json.dumps(
            {"softex": {"redmule_utilisation": {"value": 0.5, "fitted_to": "test"}}, "hastily": {"mvm_cycles": 100}}
        )
    )
    monkeypatch.setattr(config, "FITTED_PATH", path)
    assert config.load_fitted("hastily") == {"mvm_cycles": 100}
    assert estimate(PRODUCT, "softex").total_cycles == 10_923  # 1,048,576/96 = 10,922.7
    assert estimate(PRODUCT, "softex", redmule_utilisation=1.0).total_cycles == 5462  # options win
    assert estimate(PRODUCT, "hastily").options["config"].mvm_cycles == 100


def test_bad_fitted_file(tmp_path, monkeypatch):
    path = tmp_path / "fitted.json"
    monkeypatch.setattr(config, "FITTED_PATH", path)
    path.write_text(json.dumps({"softex": {"fma_units": 10}}))
    with pytest.raises(ValueError, match="not fittable"):
        estimate(PRODUCT, "softex")
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="top level"):
        estimate(PRODUCT, "softex")
    path.write_text(json.dumps({"softex": {"redmule_utilisation": 2.0}}))
    with pytest.raises(ValueError, match="redmule_utilisation"):
        estimate(PRODUCT, "softex")
    path.write_text('{"softex": {"redmule_utilisation": 0.')  # truncated
    with pytest.raises(ValueError, match=f"{path}.* is not valid JSON.*--refit"):
        estimate(PRODUCT, "softex")


def test_every_fitted_name_is_a_field():
    from hwmodels.atleus import ATLEUS
    from hwmodels.flexisaga import FLEXISAGA
    from hwmodels.hastily import HASTILY

    for default in (SOFTEX, HASTILY, ATLEUS, FLEXISAGA):
        fields = set(type(default).__dataclass_fields__)
        assert set(type(default).FITTED) <= fields
