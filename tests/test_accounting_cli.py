"""`python -m accounting`: noise multiplier / epsilon on stdout, clean errors with exit status 2."""

import json
import subprocess
import sys

import pytest

from accounting import (
    epsilon_full_batch,
    epsilon_poisson,
    noise_multiplier_full_batch,
)
from accounting.__main__ import main


def run_main(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_noise_multiplier_for_target_epsilon(capsys):
    code, out, _ = run_main(["--epsilon", "4", "--delta", "1e-6", "--steps", "1"], capsys)
    assert code == 0
    assert float(out) == noise_multiplier_full_batch(4.0, 1e-6, 1)
    assert float(out) == pytest.approx(1.1935, abs=5e-4)


def test_epsilon_for_noise_multiplier(capsys):
    code, out, _ = run_main(
        ["--noise-multiplier", "1.2", "--steps", "1", "--delta", "1e-6"], capsys
    )
    assert code == 0 and float(out) == epsilon_full_batch(1.2, 1, 1e-6)
    assert 3.9 < float(out) < 4.0  # a bit more noise than 1.1935, a bit less than epsilon 4


def test_poisson_and_json(capsys):
    argv = [
        "--noise-multiplier",
        "1.0",
        "--sampling-rate",
        "0.01",
        "--steps",
        "50",
        "--delta",
        "1e-6",
        "--discretization",
        "1e-3",
        "--json",
        "--cross-check-rdp",
    ]
    code, out, _ = run_main(argv, capsys)
    result = json.loads(out)
    assert code == 0 and result["accountant"] == "pld"
    expected = epsilon_poisson(1.0, 0.01, 50, 1e-6, value_discretization_interval=1e-3)
    assert result["epsilon"] == expected
    assert result["epsilon"] <= result["epsilon_rdp"]
    assert result["adjacency"] == "add_or_remove_one" and result["sampling_rate"] == 0.01

    argv = [
        "--epsilon",
        "1.5",
        "--sampling-rate",
        "0.05",
        "--steps",
        "10",
        "--delta",
        "1e-5",
        "--discretization",
        "1e-3",
    ]
    code, out, _ = run_main(argv, capsys)
    sigma = float(out)
    eps = epsilon_poisson(sigma, 0.05, 10, 1e-5, value_discretization_interval=1e-3)
    assert eps <= 1.5 and eps == pytest.approx(1.5, rel=1e-4)


def test_json_full_batch_and_infinite_epsilon(capsys):
    _, out, _ = run_main(["--epsilon", "inf", "--delta", "1e-5", "--steps", "3", "--json"], capsys)
    result = json.loads(out)
    assert result == {
        "accountant": "gdp",
        "adjacency": "add_or_remove_one",
        "delta": 1e-5,
        "steps": 3,
        "sampling_rate": 1.0,
        "epsilon": "inf",
        "noise_multiplier": 0.0,
        "output": "noise_multiplier",
        "mu": "inf",
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epsilon", "0", "--delta", "1e-6"], "epsilon must be > 0"),
        (["--epsilon", "1", "--delta", "1.5"], "delta must be in (0, 1)"),
        (["--epsilon", "1", "--delta", "1e-6", "--steps", "0"], "steps must be >= 1"),
        (["--epsilon", "1", "--delta", "1e-6", "--sampling-rate", "0"], "sampling_rate"),
        (["--noise-multiplier", "-1", "--delta", "1e-6"], "noise_multiplier must be >= 0"),
        (["--epsilon", "1", "--noise-multiplier", "1", "--delta", "1e-6"], "not allowed with"),
        (["--epsilon", "1"], "--delta"),
        (["--epsilon", "1", "--delta", "1e-6", "--cross-check-rdp"], "needs --sampling-rate"),
    ],
)
def test_bad_input_exits_2_with_message(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_module_entry_point_subprocess():
    done = subprocess.run(
        [sys.executable, "-m", "accounting", "--epsilon", "4", "--delta", "1e-6", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and done.stderr == ""
    assert json.loads(done.stdout)["noise_multiplier"] == pytest.approx(1.1935, abs=5e-4)


ODD_INPUTS = [
    (["--epsilon", "abc", "--delta", "1e-6"], "argument --epsilon: invalid float value: 'abc'"),
    (["--epsilon", "1", "--delta", "1e-6", "--steps", "0"], "steps must be >= 1, got 0"),
    (["--epsilon", "1", "--delta", "1e-6", "--steps", "1.5"], "invalid int value: '1.5'"),
    (["--epsilon", "1", "--delta", "1e-6", "--sampling-rate", "2"], "sampling_rate must be in"),
    ([], "the following arguments are required"),
    (["--delta", "1e-6"], "one of the arguments --epsilon --noise-multiplier is required"),
    (["--epsilon", "1"], "the following arguments are required: --delta"),
    (["--epsilon", "nan", "--delta", "1e-6"], "epsilon must be > 0, got nan"),
    (["--epsilon", "1", "--delta", "0"], "delta must be in (0, 1)"),
    (["--epsilon", "1", "--delta", "1e-6", "--discretization", "0"], "--discretization must be"),
    (["--epsilon", "1", "--delta", "1e-6", "--bogus"], "unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize(("argv", "message"), ODD_INPUTS)
def test_odd_input_is_one_error_line_with_status_2_in_a_subprocess(argv, message):
    done = subprocess.run(
        [sys.executable, "-m", "accounting", *argv], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr


# Runs main on each argv of a JSON list in one fresh interpreter; prints, per argv, its exit
# status and the heavy modules imported so far.
IMPORTS_AFTER = """
import json, sys
from accounting.__main__ import main
for argv in json.loads(sys.argv[1]):
    try:
        status = main(argv)
    except SystemExit as exit:
        status = exit.code
    heavy = [m for m in ("dp_accounting", "scipy", "jax") if m in sys.modules]
    print(json.dumps([status, heavy]))
"""


def test_usage_errors_return_before_dp_accounting_or_scipy_is_imported():
    cases = [argv for argv, _ in ODD_INPUTS] + [["history"], ["history", "a", "b"]]
    done = subprocess.run(
        [sys.executable, "-c", IMPORTS_AFTER, json.dumps(cases)],
        capture_output=True,
        text=True,
        check=True,
    )
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert results == [[2, []]] * len(cases)
    assert all(line.startswith("error: ") for line in done.stderr.splitlines())
    assert len(done.stderr.splitlines()) == len(cases)


def test_a_grid_too_large_for_memory_is_one_error_line(capsys, monkeypatch):
    import accounting.poisson

    def out_of_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 1.50 TiB")

    monkeypatch.setattr(accounting.poisson, "epsilon_poisson", out_of_memory)
    argv = ["--noise-multiplier", "1", "--delta", "1e-6", "--sampling-rate", "0.1"]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--steps", "10000000000"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the PLD accountant needs more memory") and err.count("\n") == 1


def test_help_shows_every_default():
    from accounting.__main__ import build_parser

    parser = build_parser()
    formatter = parser.formatter_class(prog=parser.prog)
    for action in parser._actions:
        if action.dest != "help":
            text = formatter._get_help_string(action) % {"default": action.default}
            assert "default" in text or "required" in text, action.option_strings
    done = subprocess.run(
        [sys.executable, "-m", "accounting", "--help"], capture_output=True, text=True, check=True
    )
    assert "(default: 1)" in done.stdout and "(default: 0.0001)" in done.stdout
