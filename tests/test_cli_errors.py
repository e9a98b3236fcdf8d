"""The command line's contract for bad input: one `error: ...` line and exit 2, never a traceback; outputs are
checked before the work starts; read-only commands change nothing. Each test runs `tiergate.cli.main` itself,
as the installed command does, on tiny files it writes."""

from __future__ import annotations

import json
import sqlite3
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from tiergate.cli import describe_error, main
from tiergate.data import Dataset, Example, write_jsonl
from tiergate.evaluate import evaluate_tier, write_reports
from tiergate.train.manifest import MANIFEST

CLASSES = {"card": ["where is my card", "card not here", "my card is late", "card still missing"],
           "refund": ["refund please", "money back", "I want a refund", "give me my money"]}


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """(exit code, stdout + stderr) of `tiergate ARGS`."""
    monkeypatch.setattr(sys, "argv", ["tiergate", *args])
    shown = warnings.showwarning
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        warnings.showwarning = shown
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text
    return code, text


def classification(tmp_path: Path, name: str = "cls.jsonl") -> Path:
    examples = [Example(t, label, i) for label, texts in CLASSES.items() for i, t in enumerate(texts, 1)]
    return write_jsonl(Dataset(examples, "classification"), tmp_path / name)


def extraction(tmp_path: Path) -> Path:
    rows = [{"input": f"table for {n} at {h}", "output": {"people": str(n), "time": str(h)}} for n, h in
            ((2, 7), (4, 8), (3, 9))]
    path = tmp_path / "ext.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def fake_model(tmp_path: Path, kind: str) -> Path:
    """A model directory as far as its manifest goes (enough to resolve a tier; nothing is loaded)."""
    task = {"classifier": "classification", "extractor": "extraction"}[kind]
    d = tmp_path / kind
    d.mkdir()
    (d / MANIFEST).write_text(json.dumps({"kind": kind, "tier_kind": kind, "task": task, "name": kind}))
    return d


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERGATE_MODELS_DIR", str(tmp_path / "registry"))
    monkeypatch.delenv("TIERGATE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


# -- 1, 2, 4, 14: what eval and compare score, and on what --------------------------------------------------------
def test_eval_takes_the_task_from_the_tier_and_refuses_data_of_another(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    cls, ext = classification(tmp_path), extraction(tmp_path)
    classifier, extractor = fake_model(tmp_path, "classifier"), fake_model(tmp_path, "extractor")
    code, out = run(monkeypatch, capsys, "eval", "--model", str(classifier), "--data", str(ext))
    assert code == 2 and "tier 'classifier' does classification, but this file holds extraction data" in out
    code, out = run(monkeypatch, capsys, "eval", "--model", str(extractor), "--data", str(cls))
    assert code == 2 and "tier 'extractor' does extraction" in out
    code, out = run(monkeypatch, capsys, "eval", "--model", str(classifier), "--data", str(cls), "--task", "generation")
    assert code == 2 and "--task generation: tier 'classifier' does classification" in out
    code, out = run(monkeypatch, capsys, "compare", "--model", str(classifier), "--model", str(extractor),
                    "--data", str(cls))
    assert code == 2 and "built for different tasks" in out


def test_eval_reads_data_as_the_classifiers_task_and_names_a_broken_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Seven examples with seven labels look like generation to a guess from the data; a classifier still
    classifies. Its directory lacks the encoder, which is named in one line, not a transformers traceback."""
    from tiergate.data import read_dataset

    path = tmp_path / "seven.jsonl"
    path.write_text("".join(json.dumps({"input": f"text {i}", "output": f"label_{i}"}) + "\n" for i in range(7)))
    assert read_dataset(path).task == "generation"
    model = fake_model(tmp_path, "classifier")
    for name, text in (("head.safetensors", ""), ("labels.json", "[]"), ("classifier.json", "{}"),
                       ("calibration.json", "{}")):
        (model / name).write_text(text)
    code, out = run(monkeypatch, capsys, "eval", "--model", str(model), "--data", str(path))
    assert "evaluating classifier (classifier) on 7 examples, task classification, 7 labels" in out
    assert code == 2 and f"error: {model}: cannot load the model of tier 'classifier'" in out


@pytest.mark.parametrize("args, message", [
    (["--limit", "0"], "--limit must be at least 1, got 0"),
    (["--limit", "-3"], "--limit must be at least 1, got -3"),
    (["--concurrency", "0"], "--concurrency must be at least 1, got 0"),
])
def test_eval_limits_below_one_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    code, out = run(monkeypatch, capsys, "eval", "--model", str(fake_model(tmp_path, "classifier")),
                    "--data", str(classification(tmp_path)), *args)
    assert code == 2 and message in out


def test_eval_and_compare_take_a_config_and_check_names_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("TG_TEST_UNSET_KEY", raising=False)
    cfg = tmp_path / "tg.yaml"
    cfg.write_text("tiers:\n  frontier: {kind: upstream, base_url: 'http://127.0.0.1:9', api_key: '${TG_TEST_UNSET_KEY}'}\n")
    data = str(classification(tmp_path))
    code, out = run(monkeypatch, capsys, "eval", "--model", "frontier", "-c", str(cfg), "--data", data)
    assert code == 2 and "tiers.frontier.api_key: environment variable TG_TEST_UNSET_KEY is not set" in out
    classifier = str(fake_model(tmp_path, "classifier"))
    code, out = run(monkeypatch, capsys, "compare", "--model", classifier, "--model", "nosuch", "-c", str(cfg),
                    "--data", data)
    assert code == 2 and "'nosuch' is neither a model directory" in out and "tiers: frontier" in out
    assert "evaluating" not in out  # refused before the first tier was scored
    code, out = run(monkeypatch, capsys, "eval", "--model", str(tmp_path), "--data", data)
    assert code == 2 and "not a trained model directory" in out


# -- 3, 12: compare across datasets, unknown costs ------------------------------------------------------------------
def _scripted_report(name: str, texts: list[tuple[str, str]]) -> Any:
    from tests.test_evaluate import ScriptedTier

    ds = Dataset([Example(t, label, i) for i, (t, label) in enumerate(texts, 1)], "classification", path=f"{name}.jsonl")
    return evaluate_tier(ScriptedTier(name, {t: label for t, label in texts}), ds)


def test_compare_of_reports_on_different_datasets_warns_and_names_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    a = _scripted_report("a", [("x", "p"), ("y", "q")])
    b = _scripted_report("b", [("x", "p"), ("y", "q"), ("z", "q")])
    write_reports([a], json_path=tmp_path / "a.json")
    write_reports([b], json_path=tmp_path / "b.json")
    code, out = run(monkeypatch, capsys, "compare", "a.json", "b.json", "--md", "ab.md", "--json", "ab.json")
    assert code == 0
    assert "warning: the tiers were scored on different datasets" in out and "a.jsonl" in out and "b.jsonl" in out
    md = (tmp_path / "ab.md").read_text()
    assert "different datasets" in md and "a: a.jsonl (2 examples" in md and "b: b.jsonl (3 examples" in md
    assert json.loads((tmp_path / "ab.json").read_text())["datasets_differ"] is True


def test_an_unpriced_tier_costs_n_a_not_zero() -> None:
    from tests.test_evaluate import ScriptedTier
    from tiergate.config import PriceConfig

    ds = Dataset([Example("x", "p", 1), Example("y", "q", 2)], "classification")
    assert evaluate_tier(ScriptedTier("free", {"x": "p", "y": "q"}), ds).metrics["cost_per_1k_usd"] is None
    priced = ScriptedTier("paid", {"x": "p", "y": "q"}, PriceConfig(per_request_usd=0.001))
    assert evaluate_tier(priced, ds).metrics["cost_per_1k_usd"] == pytest.approx(1.0)


# -- 6, 7: outputs checked first, bad files named ---------------------------------------------------------------------
def test_outputs_that_cannot_be_written_are_refused_before_the_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    data = str(classification(tmp_path))
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    cases = [
        (["data", "import", data, "--out", "adir"], "--out adir: is a directory"),
        (["data", "import", data, "--out", "afile/x.jsonl"], "--out afile/x.jsonl: its directory afile exists"),
        (["data", "split", data, "--out-dir", "afile/sub"], "--out-dir afile/sub: cannot create it"),
        (["eval", "--model", str(fake_model(tmp_path, "classifier")), "--data", data, "--json", "adir"],
         "--json adir: is a directory"),
        (["train", "classifier", "--train", data, "--out", "afile"], "--out afile: it exists and is not a directory"),
    ]
    for args, message in cases:
        code, out = run(monkeypatch, capsys, *args)
        assert code == 2 and message in out, (args, out)
    monkeypatch.setenv("TIERGATE_MODELS_DIR", str(tmp_path / "afile" / "registry"))
    code, out = run(monkeypatch, capsys, "train", "classifier", "--train", data, "--out", "m")
    assert code == 2 and "model registry" in out and "--no-register" in out
    assert "training" not in out  # refused before training, not at registration


def test_bad_input_files_are_one_line_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    data = str(classification(tmp_path))
    (tmp_path / "dir.csv").mkdir()
    (tmp_path / "latin1.json").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "bad.yaml").write_text("epochs: [1,\n")
    (tmp_path / "not-a-db.db").write_text("hello")
    write_reports([_scripted_report("a", [("x", "p"), ("y", "q")])], json_path=tmp_path / "a.json")
    cases = [
        (["data", "import", "dir.csv", "--out", "o.jsonl"], "dir.csv: is a directory, not a file"),
        (["train", "classifier", "--train", data, "--out", "m", "--config", "nope.yaml"], "--config nope.yaml: no such"),
        (["train", "classifier", "--train", data, "--out", "m", "--config", "dir.csv"], "--config dir.csv: not a file"),
        (["train", "classifier", "--train", data, "--out", "m", "--config", "bad.yaml"], "bad.yaml:2: not valid YAML"),
        (["train", "classifier", "--train", data, "--out", "m", "--set", "device=tpu"], "device must be 'auto'"),
        (["compare", "a.json", "dir.csv"], "dir.csv: is a directory"),
        (["compare", "a.json", "latin1.json"], "latin1.json: not a tiergate report (not UTF-8"),
        (["compare", "a.json", "list.json"], "list.json: not a tiergate report"),
        (["config", "check", "-c", "latin1.json"], "latin1.json: not UTF-8 text"),
        (["store", "migrate", "--db", "sqlite:///not-a-db.db"], "file is not a database"),
    ]
    for args, message in cases:
        code, out = run(monkeypatch, capsys, *args)
        assert code == 2 and message in out, (args, out)


def test_main_translates_what_no_command_did() -> None:
    import pydantic
    import yaml

    assert describe_error(FileNotFoundError(2, "No such file or directory", "/x/y")) == "/x/y: No such file or directory"
    assert "not UTF-8" in str(describe_error(b"\xe9".decode("utf-8", errors="strict") if False else
                                             UnicodeDecodeError("utf-8", b"\xe9", 0, 1, "invalid")))
    try:
        yaml.safe_load("a: [1,\n")
    except yaml.YAMLError as exc:
        assert "not valid YAML" in str(describe_error(exc))

    class Options(pydantic.BaseModel):
        since_days: float = pydantic.Field(gt=0)

    try:
        Options(since_days=-1)
    except pydantic.ValidationError as exc:
        assert "since_days: Input should be greater than 0" in str(describe_error(exc))
    assert describe_error(RuntimeError("a bug")) is None


# -- 9, 14: training data checks ---------------------------------------------------------------------------------------
def test_train_refuses_one_class_and_validation_labels_it_never_saw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    one = tmp_path / "one.jsonl"
    one.write_text("".join(json.dumps({"input": f"text {i}", "output": "only"}) + "\n" for i in range(5)))
    code, out = run(monkeypatch, capsys, "train", "classifier", "--train", str(one), "--out", "m")
    assert code == 2 and "needs at least two classes" in out
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"input": "a", "output": "x"}) + "\n" + json.dumps({"input": "b", "output": "y"}) + "\n")
    code, out = run(monkeypatch, capsys, "train", "classifier", "--train", str(classification(tmp_path)),
                    "--eval", str(other), "--out", "m", "--no-register")
    assert code == 2 and "no validation label is a training label" in out and "'x', 'y'" in out


def test_some_unknown_validation_labels_are_warned_about() -> None:
    from tiergate.train.classifier import check_eval_labels

    ds = Dataset([Example("a", "card", 1), Example("b", "lost", 2), Example("c", "lost", 3)], "classification",
                 path="val.jsonl")
    with pytest.warns(UserWarning, match=r"2 of 3 validation examples have labels .*'lost'"):
        check_eval_labels(["card", "refund"], ds)


# -- 5, 10, 11, 12, 13: store and config commands ---------------------------------------------------------------------
def test_read_only_store_commands_create_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'typo' / 'tg.db'}"
    for args in (["logs"], ["keys", "list"], ["keys", "revoke", "x"]):
        code, out = run(monkeypatch, capsys, *args, "--db", url)
        assert code == 2 and "no capture store at" in out, (args, out)
    assert not (tmp_path / "typo").exists()


def test_logs_checks_its_options_and_shows_unknown_numbers_as_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from tiergate.store.db import open_store
    from tiergate.store.writer import insert_records, normalize_record

    url = f"sqlite:///{tmp_path / 'tg.db'}"
    insert_records(open_store(url), [normalize_record({"request_id": "r1", "created_at": 1.0, "workload": "w",
                                                       "status": "error", "tier": "t"})])
    code, out = run(monkeypatch, capsys, "logs", "--db", url, "--status", "foo")
    assert code == 2 and "'foo': ok or error" in out
    code, out = run(monkeypatch, capsys, "logs", "--db", url, "-n", "-5")
    assert code == 2 and "must be at least 1" in out
    monkeypatch.setenv("COLUMNS", "200")
    code, out = run(monkeypatch, capsys, "logs", "--db", url)
    assert code == 0 and "-/-" in out and "0.000000" not in out and "0/0" not in out


def test_read_only_commands_need_no_tier_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from tiergate.config import load_config
    from tiergate.errors import ConfigError
    from tiergate.store.db import open_store

    monkeypatch.delenv("TG_TEST_UNSET_KEY", raising=False)
    cfg = tmp_path / "tg.yaml"
    cfg.write_text("tiers:\n  frontier: {kind: upstream, base_url: 'http://127.0.0.1:9', api_key: '${TG_TEST_UNSET_KEY}'}\n"
                   f"store: {{url: 'sqlite:///{tmp_path / 'tg.db'}'}}\n")
    open_store(f"sqlite:///{tmp_path / 'tg.db'}").dispose()
    code, out = run(monkeypatch, capsys, "logs", "-c", str(cfg))
    assert code == 0, out
    code, out = run(monkeypatch, capsys, "config", "check", "-c", str(cfg))
    assert code == 0 and "warning:" in out and "TG_TEST_UNSET_KEY is not set" in out
    with pytest.raises(ConfigError, match="TG_TEST_UNSET_KEY"):
        load_config(cfg)  # what serve loads
    lenient = load_config(cfg, require_secrets=False)
    assert lenient.tiers["frontier"].api_key is None  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="TG_TEST_UNSET_KEY"):
        lenient.check_secrets("frontier")


def test_keys_create_refuses_an_empty_name_and_warns_of_unknown_workloads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'tg.db'}"
    code, out = run(monkeypatch, capsys, "keys", "create", "", "--db", url)
    assert code == 2 and "the key needs a name" in out
    cfg = tmp_path / "tg.yaml"
    cfg.write_text("tiers: {local: {kind: local_lm}}\nworkloads: {triage: {tier: local}}\n")
    code, out = run(monkeypatch, capsys, "keys", "create", "app", "-w", "nosuch", "-c", str(cfg), "--db", url)
    assert code == 0 and "warning: workload(s) 'nosuch' not in the config (workloads: triage)" in out


def test_config_check_refuses_a_model_tier_without_a_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notamodel").mkdir()
    cfg = tmp_path / "tg.yaml"
    cfg.write_text(f"tiers:\n  t: {{kind: classifier, model: {tmp_path / 'notamodel'}}}\n"
                   f"  e: {{kind: extractor, model: {tmp_path / 'missing'}}}\n")
    code, out = run(monkeypatch, capsys, "config", "check", "-c", str(cfg))
    assert code == 2 and "tiers.t.model:" in out and "not a trained model" in out
    assert "tiers.e.model:" in out and "no such directory" in out


def test_config_check_refuses_missing_adapters_and_monitor_references(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A monitor reference that is not there left input and label drift silently off (a traceback in the log at
    the first request); it is read from the config's directory like the tiers' models."""
    conf = tmp_path / "conf"
    (conf / "data").mkdir(parents=True)
    (conf / "data" / "train.jsonl").write_text('{"text": "charged twice", "label": "billing"}\n')
    (conf / "plain").mkdir()
    cfg = conf / "tg.yaml"
    cfg.write_text("tiers:\n  lm: {kind: local_lm, adapter: plain}\n  lm2: {kind: local_lm, adapter: nope}\n"
                   "monitor:\n  workloads:\n    ok: {reference: data/train.jsonl}\n"
                   "    bad: {reference: data/nope.jsonl}\n")
    monkeypatch.chdir(tmp_path)  # not the config's directory
    code, out = run(monkeypatch, capsys, "config", "check", "-c", "conf/tg.yaml")
    assert code == 2
    assert "tiers.lm.adapter:" in out and "not a PEFT adapter (no adapter_config.json)" in out
    assert "tiers.lm2.adapter: nope: no such directory" in out
    assert "monitor.workloads.bad.reference: data/nope.jsonl: no such file" in out
    assert "monitor.workloads.ok" not in out  # found beside the config


# -- 8: replay-spill ----------------------------------------------------------------------------------------------------
def test_replay_spill_reports_rejected_records_and_keeps_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from tiergate.store.db import open_store
    from tiergate.store.writer import insert_records, normalize_record

    url = f"sqlite:///{tmp_path / 'tg.db'}"
    stored = {"request_id": "old", "created_at": 1.0, "workload": "w", "status": "ok"}
    insert_records(open_store(url), [normalize_record(stored)])
    spill = tmp_path / "spill.jsonl"
    fresh = {**stored, "request_id": "new"}
    spill.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in (stored, {"foo": 1}, fresh)) + b"not json\n")
    code, out = run(monkeypatch, capsys, "store", "replay-spill", str(spill), "--db", url)
    assert code == 2
    assert "replayed 1 records" in out and "1 already stored, skipped" in out
    assert "spill.jsonl:2: rejected: missing required field(s) request_id, created_at, workload, status" in out
    assert "spill.jsonl:4: rejected: not a JSON record" in out and "2 record(s) rejected" in out
    assert spill.is_file()  # left in place to be fixed
    rows = sqlite3.connect(tmp_path / "tg.db").execute("SELECT request_id FROM records ORDER BY id").fetchall()
    assert rows == [("old",), ("new",)]
    spill.write_text(json.dumps(stored) + "\n" + json.dumps(fresh) + "\n")
    code, out = run(monkeypatch, capsys, "store", "replay-spill", str(spill), "--db", url)
    assert code == 0 and "2 already stored, skipped" in out and not spill.exists()


ROUTED = """
tiers:
  local: {kind: upstream, base_url: "http://127.0.0.1:9/v1", zone: on_prem}
  frontier: {kind: upstream, base_url: "http://127.0.0.1:9/v1"}
workloads:
  w:
    policy: [%s]
"""


@pytest.mark.parametrize("router, files, message", [
    ("{kind: boundary, path: routers/none, escalate_to: frontier}", {},
     "workloads.w.policy[0]: {dir}/routers/none: not a trained router directory"),
    ("{kind: boundary, path: routers/b, escalate_to: frontier}", {"routers/b/router.json": {"kind": "learned"}},
     "workloads.w.policy[0]: {dir}/routers/b: a 'learned' router, not 'boundary'"),
    ("{kind: boundary, path: routers/b, escalate_to: frontier}",
     {"routers/b/router.json": {"kind": "boundary", "classifier": "../../models/gone"}},
     "the boundary's classifier {dir}/routers/b/../../models/gone is not a trained model directory"),
    ("{kind: learned, path: routers/b, small: local, large: frontier}", {"routers/b/router.json": {"kind": "boundary"}},
     "a 'boundary' router, not 'learned'"),
    ("{kind: cascade, small: local, large: frontier, calibration: cal.json}", {"cal.json": {"kind": "learned",
                                                                               "threshold": 0.7}},
     "cal.json: a 'learned' router's file, not a cascade calibration"),
    ("{kind: cascade, small: local, large: frontier, calibration: cal.json}", {"cal.json": {"threshold": 7.5}},
     "threshold 7.5 is not a confidence between 0 and 1"),
])
def test_config_check_reads_router_artifacts_by_their_key(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                          router: str, files: dict[str, Any], message: str) -> None:
    """A router file missing or of the wrong kind is found by `config check` (and `serve`, before it starts),
    named by its key; relative paths are read from the config's directory, wherever the command runs."""
    conf = tmp_path / "conf"
    for name, content in files.items():
        (conf / name).parent.mkdir(parents=True, exist_ok=True)
        (conf / name).write_text(json.dumps(content))
    conf.mkdir(exist_ok=True)
    (conf / "tiergate.yaml").write_text(ROUTED % router)
    monkeypatch.chdir(tmp_path)
    code, out = run(monkeypatch, capsys, "config", "check", "-c", str(conf / "tiergate.yaml"))
    assert code == 2 and message.format(dir=conf) in out, out
    code, out = run(monkeypatch, capsys, "serve", "-c", str(conf / "tiergate.yaml"), "--port", "1")
    assert code == 2 and message.format(dir=conf) in out, out


def test_relative_router_files_are_read_from_the_configs_directory(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "cal.json").write_text(json.dumps({"kind": "cascade", "threshold": 0.8}))
    (conf / "tiergate.yaml").write_text(ROUTED % "{kind: cascade, small: local, large: frontier, calibration: cal.json}")
    monkeypatch.chdir(tmp_path)  # not the config's directory
    code, out = run(monkeypatch, capsys, "config", "check", "-c", "conf/tiergate.yaml")
    assert code == 0 and "config OK" in out, out


def test_commands_writing_to_a_pipe_or_log_show_no_weight_loading_bars(monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Router, eval and retrain commands in a pipeline or a cron log printed transformers' "Loading weights"
    bars; the CLI turns Hugging Face bars off when stderr is no terminal (an explicit setting wins)."""
    import os

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    code, _ = run(monkeypatch, capsys, "router", "kinds")  # pytest's captured stderr is no terminal
    assert code == 0 and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")
    run(monkeypatch, capsys, "router", "kinds")
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "0"


def test_costs_report_warns_when_the_stores_tiers_are_not_in_its_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Without -c the report read the store against the embedded defaults: "all on local (baseline)", 72% saved,
    against a tier that carried nothing, and no word that the store's tiers were unknown to it."""
    from tests.store_support import seed_store

    rows = [{"request_id": f"r{i}", "created_at": 1_750_000_000.0 + i, "workload": "w", "status": "ok",
             "tier": "frontier" if i % 2 else "small", "prompt_tokens": 10, "completion_tokens": 2,
             "cost_usd": 0.001} for i in range(6)]
    url, cfg = seed_store(f"sqlite:///{tmp_path / 'c.db'}", rows, tmp_path,
                          'tiers:\n  frontier: {kind: upstream, base_url: "http://127.0.0.1:9/v1", model: gpt-4o}\n')
    code, out = run(monkeypatch, capsys, "costs", "report", "--db", url, "--since", "all")
    assert code == 0 and "warning: tier(s) frontier, small carried traffic but are not in the embedded defaults" in out
    code, out = run(monkeypatch, capsys, "costs", "report", "--db", url, "--since", "all", "-c", str(cfg))
    assert code == 0 and "warning: tier(s) small carried traffic but are not in the config" in out
