"""Datasets: one example shape for every task, read from CSV, JSONL or Hugging Face `datasets`.

    ds = read_dataset("tickets.csv", text_column="body", label_column="queue")    # classification
    ds = read_dataset("fields.jsonl", task="extraction")                          # {"input": ..., "output": {...}}
    ds = scrub_dataset(ds)                                                         # emails, phones, cards, accounts
    ds = export_traffic("sqlite:///tiergate.db", "triage", task="classification")  # captured answers (export.py)
    splits = split_dataset(ds, val=0.1, test=0.1, seed=0)                          # stratified, leakage-checked
    write_jsonl(splits.train, "train.jsonl")

An example is `{"input": str | messages, "output": str | object}`; `example.text` is the input's last user
message. Task types: `classification` (a label set), `extraction` (a JSON object of named fields whose values
come from the input) and `generation` (free text). Bad files raise `DataError` naming the file and line.
"""

from tiergate.data.dataset import TASKS, Dataset, Example, Task, infer_task, input_text
from tiergate.data.export import ExportSummary, export_traffic
from tiergate.data.io import (
    load_hf_dataset,
    read_csv,
    read_dataset,
    read_jsonl,
    read_texts,
    write_csv,
    write_jsonl,
)
from tiergate.data.pii import scrub_dataset, scrub_text
from tiergate.data.split import Splits, check_leakage, remove_overlap, split_dataset

__all__ = [
    "TASKS", "Dataset", "Example", "Task", "infer_task", "input_text",
    "ExportSummary", "export_traffic",
    "load_hf_dataset", "read_csv", "read_dataset", "read_jsonl", "read_texts", "write_csv", "write_jsonl",
    "scrub_dataset", "scrub_text", "Splits", "check_leakage", "remove_overlap", "split_dataset",
]
