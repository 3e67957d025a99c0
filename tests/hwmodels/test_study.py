"""The study: option parsing and routing, metrics, a small end-to-end run, the CLI."""

import csv
import json
import math

import numpy as np
import pytest
import torch

from hwmodels import study
from hwmodels.__main__ import main

# ------------------------------------------------------------------ options


@pytest.mark.parametrize(
    "text",
    [
        "atleus.adc_bits",
        "atleus=4",
        "adc_bits=4",
        ".adc_bits=4",
        "atleus.=4",
        "atleus.adc_bits=",
        "atleus.adc_bits=4,,6",
    ],
)
def test_bad_assignment_syntax_is_rejected(text):
    with pytest.raises(ValueError, match="TARGET.OPTION=VALUE|empty value"):
        study.parse_assignment(text)


def test_assignment_values_are_typed():
    assert study.parse_assignment("atleus.adc_bits=4,5") == ("atleus", "adc_bits", [4, 5])
    assert study.parse_assignment("flexisaga.sparsity=0.25") == ("flexisaga", "sparsity", [0.25])
    assert study.parse_assignment("softex.gelu=false") == ("softex", "gelu", [False])
    assert study.parse_assignment("atleus.quant=M8F4,None") == ("atleus", "quant", ["M8F4", None])


def test_unknown_target_or_option_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown target 'tpu'"):
        study.plan(["tpu"])
    with pytest.raises(ValueError, match="unknown option 'adc_bitz' for target 'atleus'; valid options: .*adc_bits"):
        study.plan(["softex"], sweeps=["atleus.adc_bitz=4,5"])
    with pytest.raises(ValueError, match="unknown option 'lanes' for target 'fp32'; valid options: none"):
        study.plan(settings=["fp32.lanes=4"])
    with pytest.raises(ValueError, match="unknown option 'quantt' for target 'atleus'"):
        study.plan(["softex"], settings=["atleus.quantt=M8F4"])  # checked though no atleus run follows
    with pytest.raises(ValueError, match="a setting takes one value"):
        study.plan(settings=["atleus.adc_bits=4,5"])


def test_plan_adds_sweeps_on_top_of_settings_without_duplicates():
    runs = study.plan(["fp32", "atleus"], ["atleus.quant=M8F4"], ["atleus.adc_bits=6,8", "atleus.quant=M8F4"])
    assert runs == [
        study.Run("fp32"),
        study.Run("atleus", {"quant": "M8F4"}),
        study.Run("atleus", {"quant": "M8F4", "adc_bits": 6}),
        study.Run("atleus", {"quant": "M8F4", "adc_bits": 8}),
    ]


def test_a_grid_combines_the_sweeps_of_each_target():
    sweeps = ["atleus.adc_bits=4,6", "hastily.adc_bits=5", "atleus.quant=M8F4,M4F8"]
    runs = study.plan([], ["atleus.lora_rank=2"], sweeps, grid=True)
    assert runs == [  # 2 x 2 for atleus, on top of its setting; 1 for hastily
        study.Run("atleus", {"lora_rank": 2, "adc_bits": 4, "quant": "M8F4"}),
        study.Run("atleus", {"lora_rank": 2, "adc_bits": 4, "quant": "M4F8"}),
        study.Run("atleus", {"lora_rank": 2, "adc_bits": 6, "quant": "M8F4"}),
        study.Run("atleus", {"lora_rank": 2, "adc_bits": 6, "quant": "M4F8"}),
        study.Run("hastily", {"adc_bits": 5}),
    ]
    assert len(study.plan([], sweeps=sweeps)) == 2 + 1 + 2  # without --grid: one option at a time, in order
    assert study.plan([], sweeps=sweeps)[2] == study.Run("hastily", {"adc_bits": 5})
    with pytest.raises(ValueError, match="atleus.adc_bits is swept twice"):
        study.plan([], sweeps=["atleus.adc_bits=4", "atleus.adc_bits=6"], grid=True)


def test_a_plan_takes_options_only_an_emulated_model_can_price():
    runs = study.plan([], ["flexisaga.criterion=activation"], ["flexisaga.allocation=uniform,global"])
    assert [r.options["allocation"] for r in runs] == ["uniform", "global"]


def test_options_go_to_emulation_or_cost_model():
    # hardware options go to emulate (the cost model prices the emulated model); cost-only ones to estimate
    emu, cost = study.split_options("flexisaga", {"sparsity": 0.75, "criterion": "l1", "dataflow": "os"})
    assert emu == {"sparsity": 0.75, "criterion": "l1"} and cost == {"dataflow": "os"}
    emu, cost = study.split_options("hastily", {"adc_bits": 5, "pipelining": False})
    assert emu == {"adc_bits": 5} and cost == {"pipelining": False}
    emu, cost = study.split_options("softex", {"softex": False})
    assert emu == {} and cost["softex"] is False


@pytest.mark.parametrize(
    "sweep,match",
    [
        ("softex.lanes=16,65", r"lanes must be an integer in \[1, 64\]; got 65"),
        ("atleus.adc_bits=8,17", r"adc_bits must be in \[1, 16\], got 17"),
        ("atleus.quant=M8F8,M9F9", "quant must be a QuantConfig or one of M8F8, M8F4, M4F8, M4F4; got 'M9F9'"),
        ("hastily.adc_bits=6,0", r"adc_bits must be in \[1, 16\], got 0"),
        ("flexisaga.sparsity=0.5,1.0", r"sparsity must be a real number in \[0, 1\), got 1.0"),
        ("softex.voltage=0.8,0.7", r"voltage must be one of \[0.8, 0.55\], got 0.7"),
        ("atleus.adc_bits=6.0", r"atleus: adc_bits must be an int, got 6.0"),
        ("hastily.adc_bits=6,0", r"^hastily: adc_bits"),  # the message names the target
    ],
)
def test_a_bad_value_fails_when_the_plan_is_built(sweep, match):
    """Every value of every run is checked against emulation and cost model before the first run."""
    with pytest.raises(ValueError, match=match):
        study.plan(["fp32"], sweeps=[sweep])


# ------------------------------------------------------------------ metrics


def test_spearman_on_a_hand_computed_example():
    # ranks x = 1..5; ranks y = [1, 2, 3.5, 5, 3.5]; centred: x [-2,-1,0,1,2], y [-2,-1,.5,2,.5]
    # sum xy = 4+1+0+2+1 = 8; sum x^2 = 10; sum y^2 = 4+1+.25+4+.25 = 9.5
    assert study.spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / math.sqrt(10 * 9.5), abs=1e-15)
    assert study.spearman([3, 1, 2], [30, 10, 20]) == 1.0
    assert study.spearman([3, 1, 2], [-3, -1, -2]) == -1.0
    assert math.isnan(study.spearman([1, 1, 1], [1, 2, 3]))


def test_spearman_agrees_with_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 6, 40), rng.normal(size=40)
    assert study.spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x, y).statistic, abs=1e-12)


def test_spearman_rejects_bad_input():
    with pytest.raises(ValueError, match="same length"):
        study.spearman([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match=">= 2"):
        study.spearman([1], [1])


def test_pareto_front_on_hand_made_points():
    #          0         1         2         3          4          5 (duplicate of 2)
    costs = [1.0, 2.0, 3.0, 2.5, 0.5, 3.0]
    accs = [0.50, 0.80, 0.95, 0.70, 0.40, 0.95]
    # 3 is beaten by 1 (cheaper, more accurate); the rest trade cost for accuracy; ties both stay
    assert study.pareto_front(costs, accs) == [4, 0, 1, 2, 5]
    assert study.pareto_front([1, 1], [0.5, 0.9]) == [1]
    assert study.pareto_front([], []) == []
    nan = float("nan")
    assert study.pareto_front([1.0, 2.0, 0.5], [0.5, 0.9, nan]) == [0, 1]  # a NaN accuracy is never on it
    assert study.pareto_front([nan, 2.0], [0.99, 0.9]) == [1]


def test_an_empty_plan_is_an_error(tiny):
    with pytest.raises(ValueError, match="runs is empty: pass study.plan"):
        study.run_study(tiny, [])


def test_accuracy_of_a_head_is_top1_agreement():
    ref = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [1.0, 0.0, 0.0], [0.0, 2.0, 1.0]])
    emu = torch.tensor([[2.0, 1.5, 0.0], [0.0, 3.5, 3.0], [1.0, 0.0, 0.0], [0.0, 1.0, 2.0]])
    metrics = study.accuracy("logits", ref, emu, {})
    assert metrics["top1_agreement"] == 0.5


def test_readout_mean_pools_over_the_mask():
    hidden = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]])
    kind, emb = study.readout(hidden, {"attention_mask": torch.tensor([[1, 1, 0]])})
    assert kind == "embedding"
    torch.testing.assert_close(emb, torch.tensor([[0.5, 0.5]]) / math.sqrt(0.5))


# ------------------------------------------------------------------ end to end

SENTENCES = ["A man plays a guitar.", "Someone plays the guitar.", "The cat sleeps.", "Markets fell today."]


@pytest.fixture(scope="module")
def tiny():
    pytest.importorskip("transformers")
    return study.tiny_subject(SENTENCES)


def test_the_built_in_model_is_seeded_and_leaves_the_global_rng_alone(tiny):
    state = torch.random.get_rng_state()
    again = study.tiny_subject(SENTENCES)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(tiny.model.state_dict().values(), again.model.state_dict().values()))
    assert torch.equal(tiny.batch["input_ids"], again.batch["input_ids"])


def test_a_small_study_writes_its_table_csv_json_and_plot(tiny, tmp_path):
    runs = study.plan(["fp32", "atleus"], sweeps=["atleus.quant=M4F4"])
    seen = []
    results = study.run_study(tiny, runs, progress=lambda done, total, run, s: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    fp32, atleus, m4f4 = results
    assert fp32.metrics["mean_cosine"] == pytest.approx(1.0, abs=1e-6) and fp32.energy_j is None
    assert m4f4.metrics["mean_cosine"] < atleus.metrics["mean_cosine"] < 1.0  # fewer weight bits, less accuracy
    assert m4f4.energy_j < atleus.energy_j  # and less energy
    table = study.format_table(results)
    lines = table.splitlines()
    assert len(lines) == 2 + 3 and "n/a" in lines[2] and "quant=M4F4" in lines[4]

    pytest.importorskip("matplotlib")
    paths = study.write_outputs(tiny, results, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert [r["target"] for r in data["results"]] == ["fp32", "atleus", "atleus"]
    assert [r["pareto"] for r in data["results"]] == [False, True, True]
    assert data["results"][2]["emulate_options"] == {"quant": "M4F4"}
    assert data["results"][2]["estimate_options"] == {}
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert float(rows[1]["energy_j"]) == atleus.energy_j and rows[0]["energy_j"] == ""
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_adc_sweep_moves_accuracy_and_cost(tiny):
    """hastily.adc_bits=4,6,8: fewer ADC bits clip more (less accuracy) and convert faster and
    cheaper (SAR time and the Accelergy energy table); the cost is the emulated model's."""
    from hwmodels import estimate
    from numerics.nn import emulate

    results = study.run_study(tiny, study.plan([], sweeps=["hastily.adc_bits=4,6,8"]))
    accuracy = [r.metrics["mean_cosine"] for r in results]
    assert accuracy[0] < accuracy[1] <= accuracy[2]
    assert results[0].energy_j < results[1].energy_j < results[2].energy_j
    assert results[0].cycles < results[1].cycles < results[2].cycles
    direct = estimate(emulate(tiny.model, "hastily", adc_bits=4), forward_kwargs=tiny.single)
    assert (results[0].cycles, results[0].energy_j) == (direct.total_cycles, direct.energy_j)


def test_identical_emulations_run_once(tiny):
    results = study.run_study(tiny, study.plan(["softex"], sweeps=["softex.softex=false"]))
    assert results[0].metrics == results[1].metrics and results[1].emulation_s == 0.0
    assert results[1].energy_j > results[0].energy_j  # the software baseline costs more


def test_cli_reports_bad_options_without_running(capsys, tmp_path):
    assert main(["study", "--model", "tiny", "--sweep", "atleus.adc=4", "--out", str(tmp_path)]) == 2
    assert "unknown option 'adc' for target 'atleus'" in capsys.readouterr().err
    assert main(["study", "--model", "tiny", "--sweep", "hastily.adc_bits=6,4.5", "--out", str(tmp_path)]) == 2
    assert "hastily: adc_bits must be an int, got 4.5" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_cli_runs_a_small_study(tiny, tmp_path, capsys):
    sentences = tmp_path / "s.txt"
    sentences.write_text("# comment\n" + "\n".join(SENTENCES) + "\n")
    out = tmp_path / "out"
    assert (
        main(
            [
                "study",
                "--model",
                "tiny",
                "--targets",
                "flexisaga",
                "--sweep",
                "flexisaga.sparsity=0.25",
                "--sentences",
                str(sentences),
                "--out",
                str(out),
                "--no-plot",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "2/2 flexisaga" in captured.err and "sparsity=0.25" in captured.out
    assert json.loads((out / "study.json").read_text())["sentences"] == 4
    assert not (out / "study.png").exists()


def test_cli_rejects_a_missing_gpu(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(["study", "--model", "tiny", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "no CUDA device is available" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_emulation_on_a_gpu_matches_the_cpu(tiny):
    runs = study.plan(["softex", "atleus"])
    on_cpu, on_gpu = study.run_study(tiny, runs), study.run_study(tiny, runs, device="cuda")
    assert next(tiny.model.parameters()).device.type == "cpu"  # the subject's model is not moved
    for cpu, gpu in zip(on_cpu, on_gpu):
        assert gpu.energy_j == cpu.energy_j
        assert gpu.metrics["mean_cosine"] == pytest.approx(cpu.metrics["mean_cosine"], abs=1e-4)


def test_a_text_subject_describes_its_sentences(tiny):
    assert tiny.unit == "sentence" and tiny.count == 4 and tiny.describe() == "4 sentences"
    tokens = tiny.single["input_ids"].shape[-1]
    assert tiny.describe_inference() == f"one sentence of {tokens} tokens"
    positional = study.Subject("x", tiny.model, tiny.batch, tiny.single)  # the four-field form still works
    assert positional.unit == "sentence" and positional.describe() == "4 sentences"


# ------------------------------------------------------------------ image models

IMAGE_PARAMETERS = {"resnet18": 11_689_512, "resnet50": 25_557_032, "mobilenet_v2": 3_504_872}
"""torchvision's parameter counts of the published architectures (1000 classes)."""


@pytest.fixture(scope="module")
def resnet18():
    pytest.importorskip("transformers")
    return study.image_subject("resnet18", images=2, size=32)


@pytest.mark.parametrize("name", study.IMAGE_MODELS)
def test_an_image_model_has_the_published_parameter_count(name):
    pytest.importorskip("transformers")
    subject = study.image_subject(name, images=1, size=32)
    assert sum(p.numel() for p in subject.model.parameters()) == IMAGE_PARAMETERS[name]
    assert not subject.model.training
    assert (
        subject.batch["pixel_values"].shape == (1, 3, 32, 32) and subject.batch["pixel_values"].dtype == torch.float32
    )
    assert torch.equal(subject.single["pixel_values"], subject.batch["pixel_values"][:1])
    assert subject.name == f"{name} (seed 0, 1 image 32x32)"
    assert (subject.unit, subject.describe(), subject.describe_inference()) == ("image", "1 image", "one 3x32x32 image")
    with torch.no_grad():
        logits = subject.model(**subject.batch).logits
    assert logits.shape == (1, 1000)
    assert 0.1 < logits.std().item() < 10  # calibrated BatchNorm: no vanishing or exploding activations


def test_an_image_subject_is_seeded_and_leaves_the_global_rng_alone(resnet18):
    state = torch.random.get_rng_state()
    again = study.image_subject("resnet18", images=2, size=32)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(again.batch["pixel_values"], resnet18.batch["pixel_values"])
    assert all(
        torch.equal(a, b) for a, b in zip(resnet18.model.state_dict().values(), again.model.state_dict().values())
    )
    with torch.no_grad():
        logits, logits_again = (s.model(**s.batch).logits for s in (resnet18, again))
    assert torch.equal(logits, logits_again)

    other = study.image_subject("resnet18", images=2, size=32, seed=1)
    assert not torch.equal(other.batch["pixel_values"], resnet18.batch["pixel_values"])
    with torch.no_grad():
        assert not torch.allclose(other.model(**resnet18.batch).logits, logits)

    more = study.image_subject("resnet18", images=3, size=32)  # a larger set starts with the smaller one
    assert torch.equal(more.batch["pixel_values"][:2], resnet18.batch["pixel_values"])


def test_an_image_subject_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown image model 'vgg16'; one of resnet18, resnet50, mobilenet_v2"):
        study.image_subject("vgg16")
    with pytest.raises(ValueError, match="images and size must be positive ints"):
        study.image_subject("resnet18", images=0)


def test_a_study_of_an_image_model(resnet18, tmp_path):
    results = study.run_study(resnet18, study.plan(["fp32", "softex"]))
    fp32, softex = results
    for result in results:
        assert list(result.metrics) == ["top1_agreement", "mean_cosine"]
    assert fp32.metrics["top1_agreement"] == 1.0
    assert fp32.metrics["mean_cosine"] == pytest.approx(1.0, abs=1e-12)
    assert fp32.cycles is None and softex.cycles > 0 and softex.energy_j > 0
    assert "top-1 agr" in study.format_table(results)
    data = json.loads(study.write_outputs(resnet18, results, tmp_path, plot=False)["json"].read_text())
    assert data["images"] == 2 and data["cost_per_inference"] == "one 3x32x32 image" and "sentences" not in data


def test_cli_runs_an_image_study(tmp_path, capsys):
    pytest.importorskip("transformers")
    out = tmp_path / "out"
    argv = ["study", "--model", "resnet18", "--images", "2", "--image-size", "32", "--targets", "fp32,softex"]
    assert main(argv + ["--out", str(out), "--no-plot"]) == 0
    captured = capsys.readouterr()
    assert "resnet18 (seed 0, 2 images 32x32): 2 images, 2 runs on cpu" in captured.err
    assert "cost of one inference (one 3x32x32 image)" in captured.out
    data = json.loads((out / "study.json").read_text())
    assert data["images"] == 2 and [r["target"] for r in data["results"]] == ["fp32", "softex"]
    assert (out / "study.csv").exists()


def test_the_shipped_sentence_set_loads():
    sentences = study.load_sentences()
    assert 20 <= len(sentences) <= 40 and not any(s.startswith("#") for s in sentences)


def test_version(capsys):
    from pathlib import Path

    import tomllib

    declared = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["version"]
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"edgenum {declared}"


def test_a_run_records_what_its_emulation_did_not_cover(capsys):
    pytest.importorskip("transformers")
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    torch.manual_seed(0)
    model = transformers.LlamaModel(config).eval()
    sentences = study.HashTokenizer(64)(["a b c", "d e", "f g h i"])
    subject = study.Subject("llama", model, sentences, sentences)
    results = study.run_study(subject, [study.Run("softex", {}), study.Run("hastily", {})])
    assert results[0].unemulated == {"silu": 1}  # SoftEx has no SiLU datapath; one MLP
    assert results[0].to_dict()["unemulated"] == {"silu": 1} and results[1].unemulated == {}


def test_flexisaga_runs_that_need_calibration_get_the_shipped_corpus():
    pytest.importorskip("transformers")
    runs = study.plan(["fp32"], ["flexisaga.reconstruct=true"], ["flexisaga.criterion=l2,activation"])
    assert [r.options for r in runs[1:]] == [
        {"reconstruct": True, "criterion": "l2"},
        {"reconstruct": True, "criterion": "activation"},
    ]
    emu, _ = study.split_options("flexisaga", runs[2].options)
    assert emu["calibrate_with"] == study.CORPUS  # filled in: neither run named calibration data
    subject = study.tiny_subject()
    batches = study.calibration_batches(subject, study.CORPUS)
    from numerics.corpus import load_corpus

    assert sum(len(b["input_ids"]) for b in batches) == len(load_corpus()) == 292 + 3506
    assert not set(load_corpus()) & set(study.load_sentences())  # calibration never sees what is scored
    results = study.run_study(subject, runs)
    assert results[2].metrics["mean_cosine"] < 1 and results[2].cycles > 0
    image = study.image_subject("resnet18", images=1, size=32)
    with pytest.raises(ValueError, match="needs a text model"):
        study.calibration_batches(image, study.CORPUS)
