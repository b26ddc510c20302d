"""The shipped classification data: the evaluation set is sized and never part of the training set."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "services/intelligence/data/train.jsonl"
EVAL = ROOT / "tests/benchmarks/data/classify_eval.jsonl"
FIELDS = {"text", "language", "sentiment", "intent"}


def _rows(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def test_eval_and_train_are_disjoint() -> None:
    train = {_norm(r["text"]) for r in _rows(TRAIN)}
    overlap = [r["text"] for r in _rows(EVAL) if _norm(r["text"]) in train]
    assert overlap == []


def test_eval_set_is_sized_and_labelled() -> None:
    rows = _rows(EVAL)
    assert len(rows) >= 300
    assert all(set(r) == FIELDS for r in rows)
    langs = Counter(r["language"] for r in rows)
    assert langs["en"] >= 140 and langs["es"] >= 140
    assert {r["sentiment"] for r in rows} == {"negative", "neutral", "positive"}


def test_train_set_has_enough_per_intent_and_language() -> None:
    rows = _rows(TRAIN)
    assert all(set(r) == FIELDS for r in rows)
    counts = Counter((r["language"], r["intent"]) for r in rows)
    for lang in ("en", "es"):
        for intent in ("billing", "delivery", "returns", "account", "technical", "complaint", "praise", "other"):
            assert counts[(lang, intent)] >= 60
