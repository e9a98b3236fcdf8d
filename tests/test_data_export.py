"""`tiergate data export`: datasets from captured traffic in a real store (SQLite, and PostgreSQL when one is
reachable). Every exported row below is worked out by hand from RECORDS.

triage (classification), read newest first by arrival time; r12 is the oldest although stored last:
  r05 error, r06 shadow, r07 cascade_first      excluded by status / role
  r10 a paragraph, r11 no messages              skipped: not_label, no_messages
  r01 = r03 after case/whitespace folding        r01 dropped (same answer after stripping)
  r02 = r04                                      r02 dropped, and its answer differs ("billing" vs "refund")
  exported, oldest first: r12 r03 r04 r08 r09
extract (extraction): e2 not JSON, e4 a JSON array; e3's ```json fence is allowed -> e1 e3
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tiergate.cli import build_app
from tiergate.data import export_traffic, read_csv, read_dataset, read_jsonl
from tiergate.errors import ConfigError, DataError
from tiergate.store.db import open_store
from tiergate.store.writer import insert_records, normalize_record

SYSTEM = {"role": "system", "content": "Classify the support ticket."}


def _t(day: int, hour: int, minute: int = 0, month: int = 11) -> float:
    return datetime(2026, month, day, hour, minute).timestamp()   # local time, as the CLI reads --since


def _rec(rid: str, t: float, text: str | list | None, answer: str | None, *, workload: str = "triage",
         tier: str = "frontier", role: str = "primary", status: str = "ok", parent: str | None = None) -> dict:
    messages = [{"role": "user", "content": text}] if isinstance(text, str) else text
    return {"request_id": rid, "created_at": t, "workload": workload, "tier": tier, "role": role,
            "status": status, "answer": answer, "messages": messages, "parent_request_id": parent,
            "http_status": 200 if status == "ok" else 502, "error": None if status == "ok" else "UpstreamError: 502"}


RECORDS = [
    _rec("r01", _t(2, 9), "Where is my card? Mail me at jo@example.com", "cards"),
    _rec("r02", _t(2, 9, 5), "I was charged twice", "billing"),
    _rec("r03", _t(2, 9, 10), "  where is MY card?\n mail me at jo@example.com ", " cards\n"),
    _rec("r04", _t(2, 9, 15), "I was charged TWICE", "refund"),
    _rec("r05", _t(2, 9, 16), "this one failed", None, status="error"),
    _rec("r06", _t(2, 9, 17), "I was charged twice", "billing", tier="small", role="shadow", parent="r02"),
    _rec("r07", _t(2, 9, 22), "card stolen call +1 415 555 0100", "cards", tier="small", role="cascade_first",
         parent="r08"),
    _rec("r08", _t(2, 9, 22), "card stolen call +1 415 555 0100", "fraud"),
    _rec("r09", _t(2, 9, 30), [SYSTEM, {"role": "user", "content": "Refund my order 4111 1111 1111 1111"}], "billing"),
    _rec("r10", _t(2, 9, 40), "what is this about", "It is probably about billing, because\nthe customer says so."),
    _rec("r11", _t(2, 9, 45), None, "cards"),
    _rec("r12", _t(30, 12, month=10), "old ticket about my card", "cards"),
    _rec("e1", _t(2, 10), "Contact Jo at jo@example.com", '{"name": "Jo", "email": "jo@example.com"}',
         workload="extract"),
    _rec("e2", _t(2, 10, 1), "Who is this?", "Sorry, I cannot tell.", workload="extract"),
    _rec("e3", _t(2, 10, 2), "Al here, phone 020 7946 0958", '```json\n{"name": "Al"}\n```', workload="extract"),
    _rec("e4", _t(2, 10, 3), "List them", "[1, 2]", workload="extract"),
]

TRIAGE = [  # the default export of triage, oldest first
    {"input": "old ticket about my card", "output": "cards"},
    {"input": "  where is MY card?\n mail me at jo@example.com ", "output": "cards"},
    {"input": "I was charged TWICE", "output": "refund"},
    {"input": "card stolen call +1 415 555 0100", "output": "fraud"},
    {"input": [SYSTEM, {"role": "user", "content": "Refund my order 4111 1111 1111 1111"}], "output": "billing"},
]
TRIAGE_SCRUBBED = [
    {"input": "  where is MY card?\n mail me at [EMAIL] ", "output": "cards"},
    {"input": "I was charged TWICE", "output": "refund"},
    {"input": "card stolen call [PHONE]", "output": "fraud"},
    {"input": [SYSTEM, {"role": "user", "content": "Refund my order [CARD]"}], "output": "billing"},
]


def _rows(ds) -> list[dict]:
    return [ex.to_json() for ex in ds]


def _fill(url: str) -> None:
    engine = open_store(url)
    try:
        assert insert_records(engine, [normalize_record(r) for r in RECORDS]) == len(RECORDS)
    finally:
        engine.dispose()


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'capture.db'}"
    _fill(url)
    return url


def test_default_export_rows_and_summary(db: str) -> None:
    ds = export_traffic(db, "triage", task="classification")
    assert _rows(ds) == TRIAGE
    assert [ex.line for ex in ds] == [1, 2, 3, 4, 5] and ds.path == "traffic:triage"
    assert ds[4].text == "Refund my order 4111 1111 1111 1111"   # the system prompt is kept, the model reads the user
    s = ds.meta["export"]
    assert s.to_json() == {
        "workload": "triage", "task": "classification", "read": 12, "exported": 5,
        "excluded": {"error": 1, "shadow": 1, "cascade_first": 1}, "skipped": {"not_label": 1, "no_messages": 1},
        "duplicates": 2, "conflicting": 1, "pii_scrubbed": None, "limited": False}
    assert "duplicates dropped: 2 (1 with a different answer)" in s.describe()


def test_window_scrub_and_counts(db: str) -> None:
    ds = export_traffic(db, "triage", task="classification", since="2026-11-01", scrub_pii=True)
    assert _rows(ds) == TRIAGE_SCRUBBED
    s = ds.meta["export"]
    assert (s.read, s.exported, s.duplicates) == (11, 4, 2)
    # r01's email is not counted: r01 is a duplicate, only exported rows count
    assert dict(s.pii_scrubbed) == {"EMAIL": 1, "PHONE": 1, "CARD": 1} == ds.meta["pii_scrubbed"]
    until = export_traffic(db, "triage", task="classification", until=_t(2, 9, 20))
    assert _rows(until) == TRIAGE[:3]


def test_no_dedupe_limit_and_labels(db: str) -> None:
    every = export_traffic(db, "triage", task="classification", dedupe=False)
    assert [r["output"] for r in _rows(every)] == ["cards", "cards", "billing", "cards", "refund", "fraud", "billing"]
    assert every.meta["export"].duplicates == 0
    newest = export_traffic(db, "triage", task="classification", limit=2)
    assert _rows(newest) == TRIAGE[3:]
    s = newest.meta["export"]
    assert (s.read, s.limited, dict(s.skipped)) == (4, True, {"no_messages": 1, "not_label": 1})
    # mapped onto a label set: "refund" is outside it, so r02 (the older answer to that input) is kept instead
    mapped = export_traffic(db, "triage", task="classification", labels=["Cards", "Billing", "Fraud"])
    assert [(r["input"] if isinstance(r["input"], str) else "r09", r["output"]) for r in _rows(mapped)] == [
        ("old ticket about my card", "Cards"), ("I was charged twice", "Billing"),
        ("  where is MY card?\n mail me at jo@example.com ", "Cards"), ("card stolen call +1 415 555 0100", "Fraud"), ("r09", "Billing")]
    assert dict(mapped.meta["export"].skipped) == {"not_in_labels": 2, "no_messages": 1}
    assert (mapped.meta["export"].duplicates, mapped.meta["export"].conflicting) == (1, 0)


def test_other_roles_and_tier_as_teacher_labels(db: str) -> None:
    ds = export_traffic(db, "triage", task="classification", tier="small", roles=("shadow", "cascade_first"))
    assert _rows(ds) == [{"input": "I was charged twice", "output": "billing"},
                         {"input": "card stolen call +1 415 555 0100", "output": "cards"}]
    assert ds.meta["export"].read == 2
    with pytest.raises(DataError, match="none of the 2 records on tier 'small' gave a classification example "
                                        r"\(excluded: 1 cascade_first, 1 shadow; skipped: none\)"):
        export_traffic(db, "triage", task="classification", tier="small")
    with pytest.raises(DataError, match="classification needs at least two classes; every example is 'billing'"):
        export_traffic(db, "triage", task="classification", tier="small", roles=("shadow",))


def test_extraction_parses_json_and_generation_keeps_text(db: str) -> None:
    ds = export_traffic(db, "extract", task="extraction", scrub_pii=True)
    assert _rows(ds) == [{"input": "Contact Jo at [EMAIL]", "output": {"name": "Jo", "email": "[EMAIL]"}},
                         {"input": "Al here, phone [PHONE]", "output": {"name": "Al"}}]
    s = ds.meta["export"]
    assert dict(s.skipped) == {"not_json": 1, "not_json_object": 1}
    assert dict(s.pii_scrubbed) == {"EMAIL": 2, "PHONE": 1}
    gen = export_traffic(db, "extract", task="generation")
    assert gen.outputs == ['{"name": "Jo", "email": "jo@example.com"}', "Sorry, I cannot tell.",
                           '```json\n{"name": "Al"}\n```', "[1, 2]"]


def test_library_errors(db: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no captured requests for workload 'nope'; the store has workloads "
                                        "extract, triage"):
        export_traffic(db, "nope", task="classification")
    with pytest.raises(DataError, match="workload 'triage' has no captured requests before 2026-10-01 00:00"):
        export_traffic(db, "triage", task="classification", until="2026-10-01")
    with pytest.raises(DataError, match="--since 'last tuesday': not a date"):
        export_traffic(db, "triage", task="classification", since="last tuesday")
    with pytest.raises(DataError, match="must come before --until"):
        export_traffic(db, "triage", task="classification", since="2026-11-02", until="2026-11-01")
    with pytest.raises(ConfigError, match="roles must be some of"):
        export_traffic(db, "triage", task="classification", roles=("teacher",))
    with pytest.raises(ConfigError, match="no capture store at .*missing.db"):
        export_traffic(f"sqlite:///{tmp_path / 'missing.db'}", "triage", task="classification")
    assert not (tmp_path / "missing.db").exists()


def test_cli_export_then_split_and_read_back(db: str, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "out" / "triage.jsonl"
    res = runner.invoke(build_app(), ["data", "export", "--workload", "triage", "--task", "classification",
                                      "--db", db, "--since", "2026-11-01", "--scrub-pii", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert [json.loads(line) for line in out.read_text().splitlines()] == TRIAGE_SCRUBBED
    assert "records read: 11" in res.output and "skipped: 1 no_messages, 1 not_label" in res.output
    assert "PII replaced: 1 CARD, 1 EMAIL, 1 PHONE" in res.output
    assert f"{out}: 4 examples, task classification, 4 labels" in res.output
    back = read_jsonl(out, task="classification")
    assert [ex.to_json() for ex in back] == TRIAGE_SCRUBBED
    res = runner.invoke(build_app(), ["data", "split", str(out), "--out-dir", str(tmp_path / "s"),
                                      "--task", "classification", "--test", "0.25"])
    assert res.exit_code == 0, res.output
    # one input per label: stratified splitting keeps every class in train
    train = read_dataset(tmp_path / "s" / "train.jsonl", task="classification")
    assert [ex.to_json() for ex in train] == TRIAGE_SCRUBBED
    assert [(tmp_path / "s" / f"{p}.jsonl").read_text() for p in ("validation", "test")] == ["", ""]
    # CSV (classification only): text is the last user message, read back by the CSV reader
    csv_out = tmp_path / "triage.csv"
    res = runner.invoke(build_app(), ["data", "export", "-w", "triage", "--task", "classification", "--db", db,
                                      "--out", str(csv_out)])
    assert res.exit_code == 0, res.output
    rows = read_csv(csv_out, task="classification")
    assert [(ex.input, ex.output) for ex in rows] == [
        ("old ticket about my card", "cards"), ("  where is MY card?\n mail me at jo@example.com ", "cards"),
        ("I was charged TWICE", "refund"), ("card stolen call +1 415 555 0100", "fraud"),
        ("Refund my order 4111 1111 1111 1111", "billing")]


def test_cli_takes_store_and_task_from_config(db: str, tmp_path: Path) -> None:
    cfg = tmp_path / "tiergate.yaml"
    cfg.write_text(f"store: {{url: '{db}'}}\ntiers:\n  frontier: {{kind: upstream, base_url: 'http://127.0.0.1:9/v1'}}\n"
                   "workloads:\n  extract: {task: extraction}\n")
    out = tmp_path / "x.jsonl"
    res = CliRunner().invoke(build_app(), ["data", "export", "-w", "extract", "--config", str(cfg), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert [json.loads(line)["output"] for line in out.read_text().splitlines()] == [
        {"name": "Jo", "email": "jo@example.com"}, {"name": "Al"}]


@pytest.mark.parametrize(("args", "message"), [
    (["-w", "nope", "--task", "classification"],
     "error: no captured requests for workload 'nope'; the store has workloads extract, triage"),
    (["-w", "triage", "--task", "classification", "--since", "2026-13-01"],
     "error: --since '2026-13-01': not a date; use an ISO date like 2026-11-01"),
    (["-w", "triage"], "error: --task is needed: workload 'triage' names no task in the config"),
    (["-w", "extract", "--task", "extraction", "--out", "{tmp}/x.csv"],
     "error: --out {tmp}/x.csv: CSV holds classification datasets; write .jsonl for extraction"),
    (["-w", "triage", "--task", "classification", "--out", "{tmp}/blocker/x.jsonl"],
     "error: --out {tmp}/blocker/x.jsonl: its directory {tmp}/blocker exists and is not a directory"),
])
def test_cli_errors_are_one_line_with_exit_code_2(db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str], args: list[str],
                                                  message: str) -> None:
    from tiergate.cli import main

    (tmp_path / "blocker").write_text("a file where a folder should be")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "d.jsonl")]
    monkeypatch.setattr(sys, "argv", ["tiergate", "data", "export", "--db", db, *args])
    monkeypatch.delenv("TIERGATE_CONFIG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message.replace("{tmp}", str(tmp_path))) and err.count("\n") == 1, err
    assert not (tmp_path / "d.jsonl").exists()


@pytest.mark.postgres
def test_export_from_postgres(pg_url: str) -> None:
    _fill(pg_url)
    ds = export_traffic(pg_url, "triage", task="classification")
    assert _rows(ds) == TRIAGE
    assert ds.meta["export"].to_json()["excluded"] == {"error": 1, "shadow": 1, "cascade_first": 1}
    scrubbed = export_traffic(pg_url, "triage", task="classification", since="2026-11-01", scrub_pii=True, limit=10)
    assert _rows(scrubbed) == TRIAGE_SCRUBBED


def test_export_traffic_captured_by_a_real_gateway(tmp_path: Path) -> None:
    import openai

    from tiergate.testing.gateway import run_gateway
    from tiergate.testing.stub_process import start_stub

    answers = {"where is my card": "cards", "refund please": "billing", "WHERE is my card ": "card_delivery"}
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    with start_stub(model="frontier", answers=answers) as stub:
        cfg = {"auth": {"require_key": False}, "store": {"url": url, "flush_interval_ms": 1},
               "tiers": {"frontier": {"kind": "upstream", "base_url": stub.base_url, "zone": "external",
                                      "retry": {"max_attempts": 1}}},
               "routing": {"default_tier": "frontier"}}
        with run_gateway(cfg) as gw:
            client = openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0)
            for text in ("where is my card", "refund please", "WHERE is my card ", "broken"):
                if text == "broken":
                    stub.control(fail={"count": 1, "status": 500})
                    with pytest.raises(openai.APIStatusError):
                        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": text}],
                                                       metadata={"workload": "triage"})
                    continue
                client.chat.completions.create(model="auto", messages=[{"role": "user", "content": text}],
                                               metadata={"workload": "triage"})
    # leaving run_gateway drained the writer: every request is in the store
    ds = export_traffic(url, "triage", task="classification")
    assert _rows(ds) == [{"input": "refund please", "output": "billing"},
                         {"input": "WHERE is my card ", "output": "card_delivery"}]
    s = ds.meta["export"]
    assert (s.read, dict(s.excluded), s.duplicates, s.conflicting) == (4, {"error": 1}, 1, 1)


def test_labels_are_cleaned_as_the_harness_reads_them(tmp_path: Path) -> None:
    """"billing." and '"billing"' are the class billing: eval, compare and the rollout gates read answers so, and
    an export that kept the period would train a model on classes that do not exist."""
    url = f"sqlite:///{tmp_path / 'labels.db'}"
    engine = open_store(url)
    insert_records(engine, [normalize_record(_rec(f"q{i}", _t(2, 9, i), f"ticket {i}", answer))
                            for i, answer in enumerate(["billing.", ' "billing" ', "refund", "refund.\n"])])
    engine.dispose()
    assert [ex.output for ex in export_traffic(url, "triage", task="classification")] == \
        ["billing", "billing", "refund", "refund"]
