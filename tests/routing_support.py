"""Shared pieces of the routing tests: a few real intents and out-of-scope queries, a tiny classifier trained
once per session on the bundled MiniLM, outcomes files, a config builder and the `tiergate router` commands."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest
import typer

from tiergate.config import parse_config
from tiergate.routing.base import RouteRequest
from tiergate.routing.policy import Routing

CARD = ["where is my new card", "my card has not arrived yet", "card still not delivered", "when will my card come",
        "has my card been posted", "tracking for my card", "I am still waiting on my card",
        "how long does card delivery take", "my debit card never showed up", "the card you sent is late"]
REFUND = ["I want a refund", "please give my money back", "refund the purchase", "how do I get reimbursed",
          "return the money for my order", "can I get a refund", "the item was faulty, refund me",
          "request a refund for this charge", "I was charged for nothing, refund it", "money back for my order"]
PIN = ["I forgot my PIN", "how do I change my pin", "reset my card pin", "my pin is blocked",
       "unblock my PIN please", "what is my pin code", "pin locked after three tries", "change the PIN on my card",
       "I need a new pin", "can't remember my pin number"]
OOS = ["what is the capital of France", "write a poem about the sea", "how tall is mount everest",
       "give me a recipe for pancakes", "who won the world cup in 2018", "translate good night into german",
       "what is the boiling point of water", "recommend a science fiction novel", "how do I train for a marathon",
       "explain quantum entanglement simply", "what time is sunset in tokyo", "tell me a joke about cats"]
INTENTS = {"card_arrival": CARD, "refund": REFUND, "pin": PIN}


def config(tmp_path: Path, policy: list[dict[str, Any]], classifier_dir: str | None = None) -> Any:
    tiers: dict[str, Any] = {
        "local": {"kind": "upstream", "base_url": "http://127.0.0.1:9", "zone": "on_prem"},
        "frontier": {"kind": "upstream", "base_url": "http://127.0.0.1:9", "zone": "external"},
    }
    if classifier_dir:
        tiers["intents"] = {"kind": "classifier", "model": classifier_dir}
    return parse_config({"tiers": tiers, "models": {"auto": "auto"}, "routing": {"default_tier": "local"},
                         "workloads": {"w": {"policy": policy}}})


def req(text: str, **body: Any) -> RouteRequest:
    return RouteRequest({"model": "auto", "messages": [{"role": "user", "content": text}], **body}, "w")


async def decide(routing: Routing, req: RouteRequest) -> Any:
    for r in routing.routers():
        await r.start()
    return await routing.route(req)


# two epochs of small batches (the trainer checkpoints at each epoch's end); no validation set: temperature 1,
# so confidences stay inside (0, 1)
FAST = {"max_steps": 12, "batch_size": 4, "max_seq_len": 16, "learning_rate": 1e-4, "head_learning_rate": 3e-2,
        "warmup_ratio": 0.0, "progress": False, "val_fraction": 0.0, "eval_every_epoch": False}


_TRAINED: dict[str, Path] = {}


@pytest.fixture(scope="session")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trained once per session, whichever test module asks first (each module that imports this fixture
    registers its own copy, so the artifact is memoised here)."""
    if "intents" not in _TRAINED:
        from tiergate.data import Dataset, Example
        from tiergate.train import get_trainer

        rows = [Example(t, k, i) for k, texts in INTENTS.items() for i, t in enumerate(texts[:7])]
        trainer = get_trainer("classifier")
        out = tmp_path_factory.mktemp("models") / "intents"
        trainer.train(Dataset(rows, "classification", path="train"), None, out, trainer.make_config(FAST))
        _TRAINED["intents"] = out
    return _TRAINED["intents"]


def outcomes_rows(seed: int = 0) -> list[dict[str, Any]]:
    """In-domain prompts the small tier answers as well as the large one; off-domain prompts only the large
    tier answers. Real text, so the router must learn it from the MiniLM embedding."""
    rng = random.Random(seed)
    subjects = ["card", "refund", "PIN", "transfer", "account statement", "direct debit", "savings pot",
                "card payment"]
    asks = ["where is my {}", "problem with my {}", "help with the {}", "status of my {}", "question about my {}"]
    topics = ["the french revolution", "black holes", "sourdough bread", "the stock market in 1929", "protein folding",
              "impressionist painting", "the roman empire", "climate models", "jazz history", "chess openings",
              "plate tectonics", "game theory", "baroque music", "the cold war", "machine translation",
              "coral reefs"]
    tasks = ["write an essay on {}", "explain {} in detail", "compare two theories about {}", "summarise the debate on {}",
             "give a lecture outline about {}", "what are open research questions in {}", "critique a book on {}",
             "draft exam questions about {}"]
    rows = []
    for a, s in itertools.product(asks, subjects):
        for suffix in ("", " please", " today", " now", "?"):
            rows.append({"prompt": a.format(s) + suffix, "scores": {"small": 1.0, "large": 1.0},
                         "costs": {"small": 0.0002, "large": 0.004}})
    for t, topic in itertools.product(tasks, topics):
        small = 1.0 if rng.random() < 0.1 else 0.0
        rows.append({"prompt": t.format(topic), "scores": {"small": small, "large": 1.0},
                     "costs": {"small": 0.0002, "large": 0.004}})
    rng.shuffle(rows)
    return rows


@pytest.fixture(scope="session")
def outcome_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    rows = outcomes_rows()
    d = tmp_path_factory.mktemp("outcomes")
    half = len(rows) // 2
    for name, part in (("train.jsonl", rows[:half]), ("test.jsonl", rows[half:])):
        (d / name).write_text("".join(json.dumps(r) + "\n" for r in part))
    return d / "train.jsonl", d / "test.jsonl"


@pytest.fixture(scope="session")
def cli() -> typer.Typer:
    from tiergate.cli.router import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    register(app)
    return app
