"""Leave-one-out calibration: the held-out figure never informs the constants that predict it."""

import dataclasses
import json

import pytest

from calibration import fit, loo, report
from calibration.evaluate import DEFAULTS, evaluate, loaded_configs
from calibration.published import BY_KEY
from hwmodels.config import FITTED_PATH


def test_a_group_without_figures_keeps_the_spec_defaults():
    results = fit.fit(exclude=frozenset({"softex.vit_throughput"}), targets=("softex",))
    assert [r.group.target for r in results] == ["softex", "softex"]
    alone = results[0]  # redmule_utilisation is fitted to the ViT throughput only
    assert alone.values == {} and alone.errors == {}
    assert fit.configs_of(results)["softex"].redmule_utilisation == DEFAULTS["softex"].redmule_utilisation == 0.9


def test_held_out_throughput_is_predicted_at_the_default_utilisation():
    held = loo.held_out("softex.vit_throughput")
    loaded = loaded_configs()
    at_default = dataclasses.replace(loaded["softex"], redmule_utilisation=0.9)  # the spec default
    assert held.value == pytest.approx(evaluate("softex.vit_throughput", {**loaded, "softex": at_default}), rel=1e-12)
    assert "kept at the spec default" in held.refit
    # with the fitted utilisation (0.830146) the figure is met; at 0.9 the throughput is higher
    assert held.value > BY_KEY["softex.vit_throughput"].value


def test_held_out_hastily_throughput_is_predicted_from_the_other_model():
    held = loo.held_out("hastily.bert_base_tops")
    assert held.refit.startswith("mvm_cycles = ") and held.refit.endswith("from hastily.bert_large_tops")
    mvm = int(held.refit.split()[2])
    refit = dataclasses.replace(DEFAULTS["hastily"], **{**_fitted("hastily"), "mvm_cycles": mvm})
    configs = {**loaded_configs(), "hastily": refit}
    assert abs(evaluate("hastily.bert_large_tops", configs) / 263 - 1) < 0.03  # fitted to it alone
    assert held.value == pytest.approx(evaluate("hastily.bert_base_tops", configs), rel=1e-12)
    in_sample = evaluate("hastily.bert_base_tops", loaded_configs()) / 158 - 1
    assert abs(held.value / 158 - 1) > abs(in_sample)  # unseen, the figure is predicted less well


def _fitted(target):
    data = json.loads(FITTED_PATH.read_text(encoding="utf-8"))
    return {name: entry["value"] for name, entry in data.get(target, {}).items()}


def test_unfitted_figures_are_already_out_of_sample_and_constructions_have_no_value():
    held = loo.held_out("hastily.puma_efficiency_ratio")
    assert held.value == evaluate("hastily.puma_efficiency_ratio", loaded_configs())
    assert held.refit == "not used by any fit: the loaded model"
    with pytest.raises(ValueError, match="no leave-one-out"):
        loo.held_out("softex.softmax_speedup")  # the software baseline is set from it
    with pytest.raises(ValueError, match="no leave-one-out"):
        loo.held_out("softex.area")  # not evaluable


def test_report_shows_current_stale_and_missing_results(tmp_path):
    fitted = tmp_path / "fitted.json"
    fitted.write_bytes(FITTED_PATH.read_bytes())
    kept = tmp_path / "loo.json"
    progress = []
    results = loo.run(("softex.vit_throughput",), progress=progress.append)
    assert len(progress) == 1 and progress[0].startswith("[1/1] softex.vit_throughput: ")
    loo.write(results, kept, fitted)
    by_key = {line.figure.key: line for line in report.lines(fitted, kept)}
    expected = f"{results['softex.vit_throughput'].value / 310 - 1:+.1%}"
    assert by_key["softex.vit_throughput"].loo == expected
    assert by_key["softex.vit_efficiency"].loo == "not run"
    assert by_key["softex.softmax_speedup"].loo == "n/a"
    assert "Leave-one-out" in report.to_markdown(list(by_key.values()))
    fitted.write_text(fitted.read_text(encoding="utf-8") + " ", encoding="utf-8")  # constants changed since
    assert {line.figure.key: line.loo for line in report.lines(fitted, kept)}["softex.vit_throughput"] == "stale"


def test_the_shipped_results_are_current_and_complete():
    held, current = loo.read()
    assert current, "hwmodels/fitted.json changed since calibration/loo.json: run python -m calibration --loo"
    assert set(loo.fitted_keys()) <= set(held)
