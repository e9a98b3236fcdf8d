"""Datasets: import (CSV, JSONL), task inference, validation errors that name file and line, stratified
splits with the leakage check, PII scrubbing, and the `tiergate data` commands."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tiergate.data import (
    Dataset,
    Example,
    check_leakage,
    infer_task,
    load_hf_dataset,
    read_csv,
    read_dataset,
    read_jsonl,
    read_texts,
    remove_overlap,
    scrub_dataset,
    scrub_text,
    split_dataset,
    write_jsonl,
)
from tiergate.errors import DataError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def jsonl(path: Path, rows: list[object]) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


def labelled(n_per_class: dict[str, int]) -> Dataset:
    examples = [Example(f"{label} question number {i}", label, i + 1)
                for label, n in n_per_class.items() for i in range(n)]
    return Dataset(examples, "classification", path="mem.jsonl")


# -- import ------------------------------------------------------------------------------------------------------

def test_csv_with_named_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", 'id,body,queue\n1,"Where is my card, please?",cards\n2,Refund me,billing\n'
                                     "3,card not here,cards\n4,charged twice,billing\n")
    ds = read_csv(path, text_column="body", label_column="queue")
    assert ds.task == "classification"
    assert ds.texts[0] == "Where is my card, please?"
    assert ds.labels() == ["billing", "cards"]
    assert [ex.line for ex in ds] == [2, 3, 4, 5]


def test_csv_guesses_common_column_names(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "text,category\na,x\nb,y\nc,x\nd,y\n")
    assert read_dataset(path).labels() == ["x", "y"]


def test_csv_missing_column_names_file_and_header_line(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "text,category\na,x\n")
    with pytest.raises(DataError) as err:
        read_csv(path, text_column="text", label_column="intent")
    assert err.value.path == str(path) and err.value.line == 1
    assert f"{path}:1:" in str(err.value) and "'intent'" in str(err.value) and "category" in str(err.value)


def test_empty_files_are_named(tmp_path: Path) -> None:
    for name in ("e.csv", "e.jsonl"):
        path = write(tmp_path / name, "")
        with pytest.raises(DataError, match="empty file") as err:
            read_dataset(path)
        assert err.value.path == str(path)
    header_only = write(tmp_path / "h.csv", "text,label\n")
    with pytest.raises(DataError, match="no examples"):
        read_dataset(header_only)


def test_one_class_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "one.csv", "text,label\na,x\nb,x\nc,x\n")
    with pytest.raises(DataError, match="at least two classes") as err:
        read_csv(path, task="classification")
    assert str(path) in str(err.value)


def test_read_texts_needs_no_labels(tmp_path: Path) -> None:
    """Examples of out-of-scope requests: one class, or none at all, is what such a file holds."""
    (tmp_path / "oos.csv").write_text("text,label\nwrite a poem,oos\n,\nwho won the cup,oos\n")
    (tmp_path / "only.csv").write_text("query\nwrite a poem\n")
    (tmp_path / "oos.jsonl").write_text('{"input": "write a poem"}\n\n'
                                        '{"input": [{"role": "system", "content": "be brief"}, '
                                        '{"role": "user", "content": "who won the cup"}], "output": "oos"}\n'
                                        '{"messages": [{"role": "user", "content": "tell a joke"}]}\n')
    (tmp_path / "oos.txt").write_text("write a poem\n\nwho won the cup\n")
    assert read_texts(tmp_path / "oos.csv") == ["write a poem", "who won the cup"]
    assert read_texts(tmp_path / "only.csv") == ["write a poem"]
    assert read_texts(tmp_path / "oos.jsonl") == ["write a poem", "who won the cup", "tell a joke"]
    assert read_texts(tmp_path / "oos.txt") == ["write a poem", "who won the cup"]
    (tmp_path / "bad.jsonl").write_text('{"input": "fine"}\n{"prompt": "no input"}\n')
    (tmp_path / "empty.txt").write_text("\n\n")
    for name, message in (("bad.jsonl", "bad.jsonl:2: want an object"), ("empty.txt", "no texts"), ("missing.csv", "file not found"),
                          ("oos.parquet", "unknown format")):
        with pytest.raises(DataError, match=message):
            read_texts(tmp_path / name)
    with pytest.raises(DataError, match="no text column 'body'"):
        read_texts(tmp_path / "oos.csv", text_column="body")


def test_csv_empty_label_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "text,label\na,x\nb,y\nc,\n")
    with pytest.raises(DataError, match="empty 'label'") as err:
        read_csv(path)
    assert err.value.line == 4


def test_csv_multiline_cell_keeps_line_numbers(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", 'text,label\n"two\nlines",x\nb,y\nc,\n')
    with pytest.raises(DataError) as err:
        read_csv(path)
    assert err.value.line == 5


def test_jsonl_inputs_and_outputs(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "d.jsonl", [
        {"input": "hello", "output": "greet"},
        {"input": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "bye now"}],
         "output": "farewell"},
        {"messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "greet"}]},
        {"input": "see you", "output": "farewell"},
    ])
    ds = read_jsonl(path, task="classification")
    assert ds.texts == ["hello", "bye now", "hi there", "see you"]
    assert ds.outputs == ["greet", "farewell", "greet", "farewell"]
    assert ds[1].messages[0]["role"] == "system"


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "malformed JSON"),
    ('{"input": "x"}', "missing key 'output'"),
    ('["input", "output"]', "must be a JSON object"),
    ('{"input": [{"content": "x"}], "output": "a"}', "'role' and 'content'"),
    ('{"input": "   ", "output": "a"}', "empty input"),
])
def test_bad_jsonl_line_is_named(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path / "bad.jsonl", '{"input": "a", "output": "x"}\n\n{"input": "b", "output": "y"}\n' + line + "\n")
    with pytest.raises(DataError, match=message) as err:
        read_jsonl(path, task="classification")
    assert err.value.path == str(path) and err.value.line == 4
    assert str(err.value).startswith(f"{path}:4: ")


def test_extraction_outputs_must_be_objects(tmp_path: Path) -> None:
    good = jsonl(tmp_path / "x.jsonl", [{"input": "call Ann at 5", "output": {"name": "Ann", "time": "5"}},
                                        {"input": "Bob", "output": '{"name": "Bob"}'}])
    ds = read_jsonl(good, task="extraction")
    assert ds.outputs[1] == {"name": "Bob"}
    bad = jsonl(tmp_path / "y.jsonl", [{"input": "a", "output": {"k": "a"}}, {"input": "b", "output": "[1, 2]"}])
    with pytest.raises(DataError, match="JSON object") as err:
        read_jsonl(bad, task="extraction")
    assert err.value.line == 2


def test_infer_task() -> None:
    assert infer_task([{"a": 1}, {"a": 2}]) == "extraction"
    assert infer_task(["x", "y", "x", "y"]) == "classification"
    assert infer_task([f"a long free text answer number {i}" for i in range(4)]) == "generation"
    assert infer_task(["multi\nline", "x", "x", "y"]) == "generation"


def test_hf_loading_needs_datasets_or_a_hub() -> None:
    try:
        import datasets  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match="pip install datasets") as err:
            load_hf_dataset("PolyAI/banking77")
        assert "hf://PolyAI/banking77" in str(err.value)
    else:
        pytest.skip("datasets is installed; the hub is not reachable from tests")


def test_write_and_read_back(tmp_path: Path) -> None:
    ds = labelled({"a": 2, "b": 2})
    back = read_jsonl(write_jsonl(ds, tmp_path / "sub" / "out.jsonl"), task="classification")
    assert back.outputs == ds.outputs and back.data_hash() == ds.data_hash()


# -- splits -----------------------------------------------------------------------------------------------------

def test_stratified_split_sizes_and_determinism() -> None:
    ds = labelled({"a": 50, "b": 30, "c": 20})
    s = split_dataset(ds, val=0.1, test=0.2, seed=7)
    assert s.sizes() == {"train": 70, "validation": 10, "test": 20}
    assert s.test.label_counts() == Counter({"a": 10, "b": 6, "c": 4})
    assert s.validation.label_counts() == Counter({"a": 5, "b": 3, "c": 2})
    again = split_dataset(ds, val=0.1, test=0.2, seed=7)
    assert again.test.texts == s.test.texts
    assert split_dataset(ds, val=0.1, test=0.2, seed=8).test.texts != s.test.texts


def test_split_keeps_a_training_example_per_class() -> None:
    s = split_dataset(labelled({"a": 40, "rare": 1}), val=0.5, test=0.4, seed=0)
    assert s.train.label_counts()["rare"] == 1


def test_duplicates_stay_in_one_split() -> None:
    examples = [Example(f"q{i}", "ab"[i % 2], i) for i in range(40)]
    examples += [Example("  Q1 ", "b", 100), Example("q1", "b", 101)]  # same input as q1 after folding
    s = split_dataset(Dataset(examples, "classification", path="d.jsonl"), val=0.2, test=0.2, seed=3)
    homes = [name for name, part in (("train", s.train), ("val", s.validation), ("test", s.test))
             if any(ex.text.strip().lower() == "q1" for ex in part)]
    assert len(homes) == 1


def test_leakage_check_names_test_file_and_line() -> None:
    train = Dataset([Example("Where is my card?", "a", 2), Example("refund", "b", 3)], "classification",
                    path="train.csv")
    test = Dataset([Example("hello", "a", 2), Example(" where is  MY card? ", "a", 3)], "classification",
                   path="test.csv")
    with pytest.raises(DataError, match="leakage: 1 input") as err:
        check_leakage(train, test)
    assert (err.value.path, err.value.line) == ("test.csv", 3)
    cleaned, dropped = remove_overlap(train, test)
    assert dropped == 1 and cleaned.texts == ["refund"]
    check_leakage(cleaned, test)


def test_bad_fractions() -> None:
    with pytest.raises(DataError, match="fractions"):
        split_dataset(labelled({"a": 5, "b": 5}), val=0.6, test=0.5)


# -- PII ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("write to jane.doe+x@example.co.uk today", "write to [EMAIL] today"),
    ("card 4111 1111 1111 1111 was charged", "card [CARD] was charged"),
    ("card 4111-1111-1111-1111.", "card [CARD]."),
    ("call +1 (555) 123-4567 or 020 7946 0958", "call [PHONE] or [PHONE]"),
    ("my account number: 12345678 is locked", "my account number: [ACCOUNT] is locked"),
    ("IBAN GB82 WEST 1234 5698 7654 32 please", "IBAN [ACCOUNT] please"),
    ("ref 123456789012", "ref [ACCOUNT]"),
    ("on 2024-01-15 I paid $100.00 for 3 items", "on 2024-01-15 I paid $100.00 for 3 items"),
    ("Call me on +44 7700 900123, my card was stolen", "Call me on [PHONE], my card was stolen"),
    ("call 07700 900123", "call [PHONE]"),
    ("SSN 123-45-6789, passport: X1234567, DOB: 1990-01-02", "SSN [SSN], passport: [PASSPORT], DOB: [DOB]"),
    ("IBAN gb82 west 1234 5698 7654 32", "IBAN [ACCOUNT]"),
    ("SSN 123 45 6789", "SSN [SSN]"),
    ("my passport renewal for 2 adults", "my passport renewal for 2 adults"),
    ("passport expired 2 weeks ago", "passport expired 2 weeks ago"),
])
def test_scrub_text(text: str, expected: str) -> None:
    assert scrub_text(text)[0] == expected


def test_scrubbing_removes_what_the_privacy_guard_finds() -> None:
    """One set of detectors: whatever the gateway would keep on-prem as personal data, --scrub-pii removes
    (names apart: found only by their cues, see tiergate.data.pii)."""
    from tiergate.data.pii import DEFAULT_DETECTORS, SCRUB_KINDS, detect_sensitive

    texts = ["mail jo@x.io or call +1 (555) 123-4567", "card 4111111111111111, IBAN GB82WEST12345698765432",
             "my account no: 12345678, NI number AB 12 34 56 C", "born on 12/03/1985, passport 123456789",
             "text me at 07700 900123 re SSN 123-45-6789"]
    kinds = [k for k in DEFAULT_DETECTORS if k in SCRUB_KINDS]
    for text in texts:
        assert detect_sensitive(text, kinds), text
        assert detect_sensitive(scrub_text(text)[0], kinds) == {}, scrub_text(text)[0]


def test_scrub_counts_and_non_luhn_card_numbers() -> None:
    clean, counts = scrub_text("a@b.io, 4111 1111 1111 1112, 4111111111111111")
    assert clean == "[EMAIL], 4111 1111 1111 1112, [CARD]"
    assert counts == Counter({"EMAIL": 1, "CARD": 1})


def test_scrub_dataset_leaves_labels_and_roles() -> None:
    ds = Dataset([Example([{"role": "user", "content": "I am bob@x.com"}], "email_change", 1),
                  Example("ok", "other", 2)], "classification")
    out = scrub_dataset(ds)
    assert out[0].input == [{"role": "user", "content": "I am [EMAIL]"}]
    assert out.outputs == ["email_change", "other"]
    assert out.meta["pii_scrubbed"] == {"EMAIL": 1}
    ext = scrub_dataset(Dataset([Example("mail bob@x.com", {"email": "bob@x.com"}, 1)], "extraction"))
    assert ext[0].output == {"email": "[EMAIL]"}


# -- CLI -----------------------------------------------------------------------------------------------------------

def test_cli_import_and_split(tmp_path: Path) -> None:
    from tiergate.cli import build_app

    rows = "".join(f'"question {i} from a{i}@mail.com",{"xyz"[i % 3]}\n' for i in range(60))
    src = write(tmp_path / "raw.csv", "body,intent\n" + rows)
    runner = CliRunner()
    out = tmp_path / "all.jsonl"
    res = runner.invoke(build_app(), ["data", "import", str(src), "--text-column", "body", "--label-column",
                                      "intent", "--scrub-pii", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "60 examples, task classification, 3 labels" in res.output and "EMAIL" in res.output
    first = json.loads(out.read_text().splitlines()[0])
    assert first == {"input": "question 0 from [EMAIL]", "output": "x"}
    res = runner.invoke(build_app(), ["data", "split", str(out), "--out-dir", str(tmp_path / "s"), "--test", "0.2"])
    assert res.exit_code == 0, res.output
    sizes = {p: len((tmp_path / "s" / f"{p}.jsonl").read_text().splitlines()) for p in ("train", "validation", "test")}
    assert sizes == {"train": 42, "validation": 6, "test": 12}
    res = runner.invoke(build_app(), ["data", "import", str(src), "--label-column", "nope", "--out", str(out)])
    assert isinstance(res.exception, DataError) and f"{src}:1:" in str(res.exception)


def test_mixed_outputs_are_named_rather_than_guessed(tmp_path: Path) -> None:
    """Some answers JSON objects, some plain labels: the file was guessed to be classification and failed on a
    label check; it is now refused as mixed, naming a line of each. JSON written as text counts as an object."""
    mixed = jsonl(tmp_path / "m.jsonl", [{"input": "call Ann", "output": {"name": "Ann"}},
                                         {"input": "refund", "output": "billing"},
                                         {"input": "Bob", "output": '{"name": "Bob"}'}])
    with pytest.raises(DataError, match=r"mixed outputs: 1 JSON objects \(extraction, e.g. line 1\) and 1 texts "
                                        r"\(e.g. line 2\)"):
        read_jsonl(mixed)
    objects = jsonl(tmp_path / "o.jsonl", [{"input": "call Ann", "output": {"name": "Ann"}},
                                           {"input": "Bob", "output": '{"name": "Bob"}'}])
    ds = read_jsonl(objects)
    assert ds.task == "extraction" and ds.outputs[1] == {"name": "Bob"}
