"""The lecture's hand-set RNNs (running sum, compare, parity) and learned parity, on the C kernel."""

import itertools
import json
import time

import numpy as np
import pytest

from rnnkit import demos
from rnnkit.errors import RnnkitError


def column(result, key):
    return [s[key] for s in result["steps"]]


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


# ----------------------------------------------------------------------------------
# running sum
# ----------------------------------------------------------------------------------

def test_running_sum_lecture_example():
    """The issue's example "2 -0.5 1 1" gives h_t = y_t = 2, 1.5, 2.5, 3.5 exactly, with every weight 1."""
    result = demos.running_sum("2 -0.5 1 1")
    assert column(result, "x") == [2.0, -0.5, 1.0, 1.0]
    assert column(result, "h") == [[2.0], [1.5], [2.5], [3.5]]
    assert column(result, "y") == [2.0, 1.5, 2.5, 3.5]
    assert all(v == [[1.0]] for k, v in result["weights"].items() if k.startswith("W"))
    assert result["activation"] == {"hidden": "identity", "output": "identity"}


def test_running_sum_matches_cumsum_on_random_inputs():
    """For random real inputs of many lengths, y_t equals np.cumsum within float32 tolerance."""
    rng = np.random.default_rng(7)
    for T in (1, 2, 5, 17, 100):
        xs = (rng.standard_normal(T) * rng.choice([0.1, 1.0, 100.0])).tolist()
        result = demos.running_sum(xs)
        expected = np.cumsum(np.array(xs, np.float64))
        scale = np.cumsum(np.abs(xs))
        y = np.array(column(result, "y"))
        h = np.array(column(result, "h"))[:, 0]
        assert np.all(np.abs(y - expected) <= 1e-6 * scale + 1e-6), (xs, y, expected)
        np.testing.assert_array_equal(h, y)


# ----------------------------------------------------------------------------------
# compare
# ----------------------------------------------------------------------------------

def test_compare_issue_example():
    """"1 0, 0 1, 1 0": running difference 1, 0, 1; y = sigma(5), sigma(0) = 0.5 (a tie is 0), sigma(5)."""
    result = demos.compare("1 0, 0 1, 1 0")
    assert column(result, "x") == [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]
    assert column(result, "h") == [[1.0], [0.0], [1.0]]
    np.testing.assert_allclose(column(result, "y"), sigmoid([5, 0, 5]), rtol=1e-6)
    assert column(result, "y_bit") == [1, 0, 1]
    assert result["weights"]["W_xh"] == [[1.0, -1.0]]
    assert result["weights"]["W_hh"] == [[1.0]]
    assert result["weights"]["W_hy"] == [[5.0]]
    assert result["gain"] == 5.0


def test_compare_matches_cumulative_sums_on_random_inputs():
    """Random pairs: y_bit = [sum x1 > sum x2] so far and y = sigma(5 * difference), away from near-ties."""
    rng = np.random.default_rng(11)
    checked = 0
    for trial in range(40):
        T = int(rng.integers(1, 30))
        if trial % 2:
            pairs = rng.integers(-3, 4, size=(T, 2)).astype(float)  # integer sums: ties are exact
        else:
            pairs = rng.standard_normal((T, 2)) * 2.0
        result = demos.compare([tuple(p) for p in pairs.tolist()])
        diff = np.cumsum(pairs[:, 0]) - np.cumsum(pairs[:, 1])
        clear = (np.abs(diff) > 1e-3) | ((diff == 0) & (trial % 2 == 1))  # exact integer ties count
        bits = np.array(column(result, "y_bit"))
        np.testing.assert_array_equal(bits[clear], (diff > 0)[clear])
        h = np.array(column(result, "h"))[:, 0]
        np.testing.assert_allclose(h, diff, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(column(result, "y"), sigmoid(5 * h), rtol=1e-5, atol=1e-6)
        checked += int(clear.sum())
    assert checked > 300


def test_compare_gain_sharpens_the_threshold():
    """A larger gain pushes y towards 0/1 without changing the decision."""
    soft, hard = demos.compare("0.1 0, 0 0.3", gain=5), demos.compare("0.1 0, 0 0.3", gain=100)
    assert column(soft, "y_bit") == column(hard, "y_bit") == [1, 0]
    assert 0.5 < soft["steps"][0]["y"] < 0.7 and hard["steps"][0]["y"] > 0.9999
    assert hard["weights"]["W_hy"] == [[100.0]]


# ----------------------------------------------------------------------------------
# parity
# ----------------------------------------------------------------------------------

def test_parity_exact_for_every_bit_string_up_to_length_12():
    """All 8190 strings of length 1..12: y_bit is the parity so far at every step, h rounds
    to AND/OR of (x_t, previous parity), and y is within 1e-3 of 0 or 1."""
    for length in range(1, 13):
        for bits in itertools.product((0, 1), repeat=length):
            result = demos.parity(list(bits))
            expected = np.cumsum(bits) % 2
            assert column(result, "y_bit") == expected.tolist(), bits
            y = np.array(column(result, "y"))
            assert np.all(np.abs(y - expected) < 1e-3), bits
            h = np.array(column(result, "h"))
            prev = np.concatenate([[0], expected[:-1]])
            x = np.array(bits)
            np.testing.assert_array_equal(np.round(h[:, 0]), x & prev)  # h1: AND
            np.testing.assert_array_equal(np.round(h[:, 1]), x | prev)  # h2: OR


def test_parity_lecture_example_and_table():
    """The lecture's input 0101101011 and its table: (y_prev, x) -> (h1, h2, y) = AND, OR, XOR."""
    result = demos.parity(demos.LECTURE_BITS)
    assert column(result, "y_bit") == [0, 1, 1, 0, 1, 1, 0, 0, 1, 0]
    table = {}
    prev = 0
    for step in result["steps"]:
        table[(prev, step["x"])] = (*(round(v) for v in step["h"]), step["y_bit"])
        prev = step["y_bit"]
    assert table == {(0, 0): (0, 0, 0), (0, 1): (0, 1, 1), (1, 0): (0, 1, 1), (1, 1): (1, 1, 0)}
    w = result["weights"]
    assert w["W_hy"] == [[-1.0, 1.0]] and w["b_y"] == [0.0]
    assert w["W_hh"] == [[-20.0, 20.0], [-20.0, 20.0]] and w["b_h"] == [-30.0, -10.0]
    assert result["activation"]["hidden"] == "logistic"


def test_parity_hidden_states_match_the_lecture_equations():
    """The kernel's h equals sigma(W_xh x + W_hh h + b_h) computed in float64 NumPy."""
    bits = [1, 1, 0, 1, 0, 0, 1, 1, 1, 0]
    result = demos.parity(bits, gain=6)
    w = {k: np.array(v, np.float64) for k, v in result["weights"].items()}
    h = np.zeros(2)
    for x, step in zip(bits, result["steps"]):
        h = sigmoid(w["W_xh"][:, 0] * x + w["W_hh"] @ h + w["b_h"])
        np.testing.assert_allclose(step["h"], h, rtol=1e-5, atol=1e-6)
        assert step["y"] == pytest.approx(float(w["W_hy"][0] @ h), abs=1e-5)


# ----------------------------------------------------------------------------------
# learned parity
# ----------------------------------------------------------------------------------

def test_train_parity_fixed_seed_generalises_to_double_length():
    """Seed 0 defaults: 100% of held-out strings of the training length and >= 95% of
    strings twice as long have every prefix parity right, in well under a minute."""
    start = time.perf_counter()
    result = demos.train_parity(seed=0)
    elapsed = time.perf_counter() - start
    acc = result["accuracy"]
    assert acc["train_length"]["length"] == 12 and acc["double_length"]["length"] == 24
    assert acc["train_length"]["string_accuracy"] == 1.0
    assert acc["double_length"]["string_accuracy"] >= 0.95
    assert elapsed < 30, elapsed
    assert result["training"]["final_loss"] < result["training"]["first_loss"]
    assert column(result, "y_bit") == (np.cumsum([int(c) for c in demos.LECTURE_BITS]) % 2).tolist()
    json.dumps(result)


def test_train_parity_is_deterministic_and_held_out():
    """A short run is reproducible for a fixed seed (except the timing) and reports its held-out sizes."""
    a = demos.train_parity(seed=3, steps=30, held_out=50, train_length=4)
    b = demos.train_parity(seed=3, steps=30, held_out=50, train_length=4)
    a["training"].pop("seconds"), b["training"].pop("seconds")
    assert a == b
    assert a["accuracy"]["train_length"]["strings"] == 8  # at most half of the 16 strings of length 4
    assert a["accuracy"]["double_length"]["strings"] == 50
    assert len(a["weights"]["W_xh"]) == 16 and len(a["weights"]["W_xh"][0]) == 2  # (H, 2 bit values)


# ----------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda: demos.parity("0102"), "bit 4 is '2'"),
    (lambda: demos.parity(""), "no bits"),
    (lambda: demos.parity("   "), "no bits"),
    (lambda: demos.parity([0, 1, 2]), "bit 3 is 2"),
    (lambda: demos.parity("0101", gain=4), "gain must be a number >= 6"),
    (lambda: demos.running_sum(""), "no input numbers"),
    (lambda: demos.running_sum("1 two 3"), "input number 2: 'two' is not a number"),
    (lambda: demos.running_sum("1 nan"), "'nan' is not a number"),
    (lambda: demos.running_sum("1e400"), "out of range"),
    (lambda: demos.running_sum([1.0, float("inf")]), "out of range"),
    (lambda: demos.running_sum([]), "no input numbers"),
    (lambda: demos.running_sum(["1"]), "is not a number"),
    (lambda: demos.compare(""), "no input pairs"),
    (lambda: demos.compare("1 0, 0"), "step 2 ('0') must have exactly two numbers"),
    (lambda: demos.compare("1 0 1"), "step 1"),
    (lambda: demos.compare("1 x, 0 1"), "step 1: 'x' is not a number"),
    (lambda: demos.compare([(1, 0), (1,)]), "step 2"),
    (lambda: demos.compare("1 0", gain=0), "gain must be a positive number"),
    (lambda: demos.train_parity(hidden=0), "hidden must be an integer from 1 to 1,024, got 0"),
    (lambda: demos.train_parity(seed=-1), "seed must be an integer"),
    (lambda: demos.train_parity(lr="fast"), "lr must be a positive number"),
    (lambda: demos.train_parity(bits="01a"), "bit 3 is 'a'"),
])
def test_bad_inputs_raise_clear_errors(call, message):
    """Malformed bits, numbers, pairs and settings raise RnnkitError with a one-line message naming the problem."""
    with pytest.raises(RnnkitError) as info:
        call()
    text = str(info.value)
    assert message in text and "\n" not in text


def test_parsers_accept_the_documented_forms():
    """Numbers by spaces or commas, pairs by commas or semicolons, bits with spaces."""
    assert demos.parse_numbers(" 2, -0.5 1 +1e0 .5 ") == [2.0, -0.5, 1.0, 1.0, 0.5]
    assert demos.parse_pairs("1 0, 0 1; -1.5 2") == [(1.0, 0.0), (0.0, 1.0), (-1.5, 2.0)]
    assert demos.parse_bits("0101 1010\n1") == [0, 1, 0, 1, 1, 0, 1, 0, 1]


# ----------------------------------------------------------------------------------
# output shape
# ----------------------------------------------------------------------------------

def test_results_are_json_documents_with_weights_and_steps():
    """Each demo's dict survives json round-trip and has weights and steps of {x, h, y}."""
    cases = [(demos.running_sum("2 -0.5 1 1"), 4, 1),
             (demos.compare("1 0, 0 1, 1 0"), 3, 1),
             (demos.parity("0101101011"), 10, 2),
             (demos.train_parity(steps=5, held_out=10, hidden=3, bits="0110"), 4, 3)]
    for result, T, H in cases:
        doc = json.loads(json.dumps(result))
        assert doc == result
        assert set(doc["weights"]) == {"W_xh", "W_hh", "b_h", "W_hy", "b_y"}
        assert len(doc["steps"]) == T
        for step in doc["steps"]:
            assert {"x", "h", "y"} <= set(step)
            assert len(step["h"]) == H and isinstance(step["y"], float)
    assert "accuracy" in cases[-1][0] and "training" in cases[-1][0]


def test_format_table_prints_weights_then_steps():
    """The text table lists every weight before the per-step rows, with h1_t, h2_t columns for parity."""
    text = demos.format_table(demos.parity("0110"))
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["t", "x_t"])
    assert header > max(i for i, line in enumerate(lines) if "b_y" in line)
    assert lines[header].split() == ["t", "x_t", "h1_t", "h2_t", "y_t", "y_bit"]
    assert len(lines) == header + 5
    assert [line.split()[-1] for line in lines[header + 1:]] == ["0", "1", "0", "0"]

    compare_text = demos.format_table(demos.compare("1 0, 0 1"))
    assert "x1_t" in compare_text and "x2_t" in compare_text and "W_hy = [ 5 ]" in compare_text
    trained = demos.format_table(demos.train_parity(steps=5, held_out=10, hidden=2, train_length=3))
    assert "held-out, length   3" in trained and "held-out, length   6" in trained
