"""SoftEx cost model: golden values computed by hand from softex.md §6.3."""

import pytest

from hwmodels import estimate
from hwmodels.softex import SOFTEX, SoftExConfig  # SOFTEX: the spec defaults, without fitted constants
from hwmodels.workload import Op, Workload

OPS = (
    Op("matmul", "mm", "", 1, 128, 64, 128),  # 128·64·128 / (192·0.9) = 6068.1 -> 6069
    Op("softmax", "softmax", "", 12, 197, 0, 197),  # 2364 rows · (3·⌈197/8⌉ + 41) + 30 = 274,254
    Op("gelu", "gelu", "", 1, 197, 0, 3072),  # 4·⌈605184/8⌉ + 20 = 302,612 on SoftEx
    # + 605184·4/8 = 302,592 on the cores
    Op("norm", "layer_norm", "", 1, 197, 0, 768),  # 151,296·8/8 = 151,296
    Op("elementwise", "add", "", 1, 197, 0, 768),  # 151,296·2/8 = 37,824
)
WORKLOAD = Workload(OPS, name="golden")


def test_golden_cycles_and_energy():
    report = estimate(WORKLOAD, "softex", config=SOFTEX)
    assert [row.cycles for row in report.rows] == [6069, 274_254, 302_612 + 302_592, 151_296, 37_824]
    assert report.total_cycles == 1_074_647
    assert report.seconds == pytest.approx(1_074_647 / 1.12e9, rel=1e-12)
    assert report.rows[1].cycles == 2364 * 116 + 30  # the spec's 116 cycles per row of 197
    # energy = mode power at 0.8 V × mode time
    redmule = 6069 * 0.49 / 1.12e9
    softex = (274_254 + 302_612) * 0.30 / 1.12e9
    cores = (302_592 + 151_296 + 37_824) * 0.30 / 1.12e9
    assert report.energy_by_component() == pytest.approx(
        {"redmule": redmule, "softex": softex, "cores": cores}, rel=1e-12
    )
    assert report.ops_by_unit() == {"redmule": 128 * 64 * 128, "softex": 2364 * 197 + 605_184, "cores": 2 * 151_296}


def test_software_baseline_and_low_voltage():
    report = estimate(WORKLOAD, "softex", config=SOFTEX, softex=False, voltage=0.55)
    # softmax 465,708 el × 10.8·3/8; GELU 605,184 el × 5.11·(4/8 + 4/8)
    assert report.rows[1].cycles == 1_886_118
    assert report.rows[2].cycles == 3_092_491
    assert report.rows[1].unit == report.rows[2].unit == "cores"
    assert report.freq_hz == 0.5e9
    scale = (0.55 / 0.8) ** 2 / 1.12e9
    assert report.rows[0].energy_j == pytest.approx(6069 * 0.49 * scale, rel=1e-12)


@pytest.mark.parametrize(
    "ratio_field,kind,published", [("sw_softmax_ratio", "softmax", 10.8), ("sw_gelu_ratio", "gelu", 5.11)]
)
def test_long_vector_ratio_is_the_published_one(ratio_field, kind, published):
    long_row = Workload((Op(kind, kind, "", 1, 1, 0, 2**22),))
    hw = estimate(long_row, "softex").total_cycles
    sw = estimate(long_row, "softex", softex=False).total_cycles
    assert sw / hw == pytest.approx(published, rel=2e-4)
    assert getattr(SoftExConfig(), ratio_field) == published


def test_lanes_change_job_cost():
    row = Workload((Op("softmax", "s", "", 1, 1, 0, 197),))
    # V = 16: 3·⌈197/16⌉ + 41 + 2 + 30 (programming of the only job)
    assert estimate(row, "softex", lanes=16).total_cycles == 3 * 13 + 43 + 30
    # V = 12: 3·⌈197/12⌉ + 41 + 2·(⌈log2 12⌉ − 3) + 30: a tree of 12 lanes has 4 levels, like 16
    assert estimate(row, "softex", lanes=12).total_cycles == 3 * 17 + 43 + 30


def test_bad_config():
    with pytest.raises(ValueError, match=r"lanes must be an integer in \[1, 64\]; got 65"):
        estimate(WORKLOAD, "softex", lanes=65)
    with pytest.raises(ValueError, match="gelu_terms"):
        estimate(WORKLOAD, "softex", gelu_terms=7)
    with pytest.raises(ValueError, match="redmule_utilisation"):
        SoftExConfig(redmule_utilisation=1.5)
    with pytest.raises(ValueError, match="voltage"):
        estimate(WORKLOAD, "softex", voltage=0.7)
