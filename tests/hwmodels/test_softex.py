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
    # energy = mode power at 0.8 V × mode time; SoftEx waits the first job's 30 programming
    # cycles in the idle mode (0.03 W)
    redmule = 6069 * 0.49 / 1.12e9
    softex = (274_224 + 302_612) * 0.30 / 1.12e9
    cores = (302_592 + 151_296 + 37_824) * 0.30 / 1.12e9
    idle = 30 * 0.03 / 1.12e9
    assert report.energy_by_component() == pytest.approx(
        {"redmule": redmule, "softex": softex, "cores": cores, "idle": idle}, rel=1e-12
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


def test_split_mode_jobs_and_programming_waits():
    rows = Workload((Op("softmax", "s", "", 1, 2, 0, 197),))
    # chunks of 64: 64, 64, 64, 5 elements = 8, 8, 8, 1 beats at V = 8
    # ACC_ONLY: 8 + 22, 8 + 22, 8 + 22, 1 + 22 + 14 (the last inverts) = 30, 30, 30, 37 -> 127
    # DIV_ONLY: 2·8 + 6 = 22, 22, 22, 2·1 + 6 = 8 -> 74; a row is 201 busy cycles
    # waits for the 30-cycle programming after each job: 0, 0, 0, 0, 8, 8, 8, 22 -> 46 per row,
    # none after the op's last job, plus the first job's 30: 30 + 2·46 − 22 = 100
    report = estimate(rows, "softex", config=SOFTEX, softmax_chunk=64)
    assert report.total_cycles == 2 * 201 + 100
    assert report.rows[0].components["idle"] == pytest.approx(100 * 0.03 / 1.12e9, rel=1e-12)
    assert report.rows[0].components["softex"] == pytest.approx(402 * 0.30 / 1.12e9, rel=1e-12)
    # a chunk that holds the whole row is the unsplit job: 3·25 + 41 per row, then 30
    assert estimate(rows, "softex", config=SOFTEX, softmax_chunk=197).total_cycles == 2 * 116 + 30


def test_slot_spill_and_fill_beyond_the_two_slots():
    rows = Workload((Op("softmax", "s", "", 1, 4, 0, 197),))
    # 3 rows in flight, 2 slots: every job but a row's first fills its slot and spills another
    # (1 beat each): ACC 30, 32, 32, 39 = 133; DIV 24, 24, 24, 10 = 82 -> 215 per row
    # waits 0 ×4, 6, 6, 6, 20 -> 38 per row; 30 + 4·38 − 20 = 162
    spilled = estimate(rows, "softex", config=SOFTEX, softmax_chunk=64, interleaved_rows=3)
    assert spilled.total_cycles == 4 * 215 + 162
    # two rows in flight fit the slots: no slot traffic (4·201 + 30 + 4·46 − 22)
    for interleaved in (1, 2):
        fits = estimate(rows, "softex", config=SOFTEX, softmax_chunk=64, interleaved_rows=interleaved)
        assert fits.total_cycles == 4 * 201 + 192
    # fewer rows than asked to interleave: only 2 are ever in flight
    two = Workload((Op("softmax", "s", "", 1, 2, 0, 197),))
    assert estimate(two, "softex", config=SOFTEX, softmax_chunk=64, interleaved_rows=3).total_cycles == 502


ATTENTION = Workload(
    (
        Op("matmul", "qk", "attn", 4, 16, 8, 16),  # per head ⌈2048 / 172.8⌉ = 12 -> 48
        Op("elementwise", "scale", "attn", 4, 16, 0, 16),  # 1024 · 2/8 = 256 -> 64 per head
        Op("softmax", "softmax", "attn", 4, 16, 0, 16),  # 64 rows · (3·2 + 41) = 3008, + 30 -> 3038
        Op("move", "clone", "attn", 4, 16, 0, 16),  # 256 -> 64 per head
        Op("matmul", "av", "attn", 4, 16, 16, 8),  # 12 per head -> 48
    )
)


def test_overlap_pipelines_attention_over_heads():
    sequential = estimate(ATTENTION, "softex", config=SOFTEX)
    assert sequential.total_cycles == 48 + 256 + 3038 + 256 + 48
    overlapped = estimate(ATTENTION, "softex", config=SOFTEX, overlap=True)
    # per head: RedMulE 12 + 12, cores 64 + 64, SoftEx 3008/4 = 752; one head runs the chain
    # (904), three more cost the busiest unit (752 each), plus the first programming wait:
    # 30 + 904 + 3·752 = 3190, saving 3646 − 3190 = 456
    assert overlapped.total_cycles == 3190
    assert [r.cycles for r in overlapped.rows] == [r.cycles for r in sequential.rows]  # busy cycles stay
    # the base power runs once over the 456 overlapped cycles
    saved_j = 456 * 0.03 / 1.12e9
    assert overlapped.energy_j == pytest.approx(sequential.energy_j - saved_j, rel=1e-12)
    assert overlapped.rows[2].components["softex"] == pytest.approx((3008 * 0.30 - 456 * 0.03) / 1.12e9, rel=1e-12)
    assert overlapped.notes == ("overlap: attention pipelined over heads, 456 cycles saved",)


def test_overlap_with_redmule_the_busiest_unit_keeps_the_first_programming_wait():
    # long products, short softmax rows: RedMulE sets the period, so the first job's 30-cycle wait is
    # not hidden in SoftEx's share
    ops = (
        Op("matmul", "qk", "attn", 4, 64, 512, 8),  # per head ⌈262,144 / 172.8⌉ = 1518
        Op("softmax", "softmax", "attn", 4, 64, 0, 8),  # 256 rows · (3·1 + 41) = 11,264, + 30 -> 11,294
        Op("matmul", "av", "attn", 4, 64, 8, 512),  # per head 1518
    )
    report = estimate(Workload(ops), "softex", config=SOFTEX, overlap=True)
    # per head: RedMulE 1518 + 1518 = 3036, SoftEx 11,264 / 4 = 2816; the chain of one head 5852, three
    # more heads at RedMulE's 3036, plus the wait: 30 + 5852 + 3·3036 = 14,990 (sequential 23,438)
    assert report.total_cycles == 14_990


def test_overlap_splits_core_ops_of_any_shape_over_the_heads():
    # eager attention scales a flattened (1, 64, 16) view: the same 256 core cycles, 64 per head
    flat = Workload(ATTENTION.ops[:1] + (Op("elementwise", "mul", "attn", 1, 64, 0, 16),) + ATTENTION.ops[2:])
    assert estimate(flat, "softex", config=SOFTEX, overlap=True).total_cycles == 3190


def test_overlap_needs_an_attention_over_heads():
    # one head, or products that do not share the softmax's batch of heads, run as in sequence
    one_head = Workload(tuple(Op(o.kind, o.name, o.scope, 1, o.m, o.k, o.n) for o in ATTENTION.ops))
    mixed = Workload(ATTENTION.ops[:4] + (Op("matmul", "av", "attn", 2, 32, 16, 8),))
    no_product_after = Workload(ATTENTION.ops[:4])
    for w in (one_head, mixed, no_product_after):
        assert estimate(w, "softex", overlap=True).total_cycles == estimate(w, "softex").total_cycles


def test_bad_config():
    with pytest.raises(ValueError, match=r"lanes must be an integer in \[1, 64\]; got 65"):
        estimate(WORKLOAD, "softex", lanes=65)
    with pytest.raises(ValueError, match="gelu_terms"):
        estimate(WORKLOAD, "softex", gelu_terms=7)
    with pytest.raises(ValueError, match="redmule_utilisation"):
        SoftExConfig(redmule_utilisation=1.5)
    with pytest.raises(ValueError, match="voltage"):
        estimate(WORKLOAD, "softex", voltage=0.7)
    for chunk in (0, 2.5, True, "64"):
        with pytest.raises(ValueError, match="softmax_chunk must be a positive int"):
            estimate(WORKLOAD, "softex", softmax_chunk=chunk)
    with pytest.raises(ValueError, match="interleaved_rows must be a positive int"):
        estimate(WORKLOAD, "softex", softmax_chunk=64, interleaved_rows=0)
    with pytest.raises(ValueError, match="interleaved_rows > 1 needs softmax_chunk"):
        estimate(WORKLOAD, "softex", interleaved_rows=3)
    with pytest.raises(ValueError, match="overlap"):
        estimate(WORKLOAD, "softex", overlap="yes")
    with pytest.raises(ValueError, match="idle_power_w"):
        estimate(WORKLOAD, "softex", idle_power_w=0.5)
    with pytest.raises(ValueError, match="state_slots"):
        SoftExConfig(state_slots=0)
