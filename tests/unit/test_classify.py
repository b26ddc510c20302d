"""The message classifier on a few clear messages per label (accuracy is measured in the bench)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from services.intelligence.classify import TRAIN_PATH, Classifier, TrainingDataError, check_training, default_classifier


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return default_classifier()


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("I was charged twice on my invoice", "billing"),
        ("me han cobrado dos veces en la factura", "billing"),
        ("where is my parcel, tracking not updated", "delivery"),
        ("mi paquete no ha llegado todavia", "delivery"),
        ("I want to return this and get a refund", "returns"),
        ("quiero devolver el pedido y que me reembolsen", "returns"),
        ("I cant log in, need to reset my password", "account"),
        ("no puedo entrar en mi cuenta, olvide la contraseña", "account"),
        ("the app crashes with an error every time", "technical"),
        ("la aplicacion da error y se cierra", "technical"),
        ("worst service ever, I want to complain", "complaint"),
        ("es una verguenza, quiero poner una reclamacion", "complaint"),
        ("thank you so much, great service", "praise"),
        ("muchas gracias, atencion excelente", "praise"),
        ("what are your opening hours", "other"),
    ],
)
def test_clear_intents(clf: Classifier, text: str, intent: str) -> None:
    assert clf.classify(text).intent == intent


@pytest.mark.parametrize(
    ("text", "language", "sentiment"),
    [
        ("This is unacceptable, I am furious with your service", "en", "negative"),
        ("Esto es inaceptable, estoy harto de vuestro servicio", "es", "negative"),
        ("Thanks a lot, you were amazing", "en", "positive"),
        ("Mil gracias, sois geniales", "es", "positive"),
        ("How do I change my delivery address?", "en", "neutral"),
        ("Como cambio la direccion de entrega?", "es", "neutral"),
    ],
)
def test_language_and_sentiment(clf: Classifier, text: str, language: str, sentiment: str) -> None:
    got = clf.classify(text)
    assert (got.language, got.sentiment) == (language, sentiment)
    assert 0.0 <= got.confidence <= 1.0


def test_batch_matches_single_and_empty_text(clf: Classifier) -> None:
    texts = ["where is my order", "", "la factura esta mal"]
    many = clf.classify_many(texts)
    assert many == [clf.classify(t) for t in texts]
    assert many[1].language == ""
    assert clf.classify_many([]) == []


def test_custom_label_set_maps_unknown_to_other_and_learns_extra_rows(tmp_path: Path) -> None:
    extra = tmp_path / "extra.jsonl"
    rows = [
        {"text": t, "language": "en", "sentiment": "neutral", "intent": "warranty"}
        for t in ("is my kettle still under warranty", "warranty claim for the toaster", "how long is the warranty",
                  "guarantee repair under warranty please", "my warranty covers this fault right", "warranty period question")
    ]  # fmt: skip
    extra.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    clf = Classifier(intents=("billing", "warranty"), extra_training=extra)
    assert clf.intents == ("billing", "warranty", "other")
    assert clf.classify("is this under warranty still").intent == "warranty"
    assert clf.classify("I was charged twice on my bill").intent == "billing"
    assert clf.classify("my parcel never arrived").intent == "other"


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ('{"text": "a", "intent": "x"}\nnot json\n', ":2: not a JSON object"),
        ('{"text": "", "intent": "x"}\n', ":1: `text` must be a non-empty string"),
        ('{"text": "a"}\n', ":1: `intent` must be a non-empty string"),
        ('{"text": "a", "intent": "x", "sentiment": "angry"}\n', ":1: `sentiment` must be one of"),
        ('{"text": "a", "intent": "x"}\n{"text": "b", "intent": "x"}\n', "at least two intents"),
    ],
)
def test_a_bad_training_file_is_refused_with_its_line(tmp_path: Path, content: str, error: str) -> None:
    path = tmp_path / "labels.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TrainingDataError, match=re.escape(error)):
        check_training(path)


def test_a_missing_training_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TrainingDataError, match="cannot read it"):
        check_training(tmp_path / "nope.jsonl")


def test_the_generator_is_deterministic_and_keeps_a_dev_split_apart() -> None:
    from services.intelligence.data.make_train import build  # noqa: PLC0415

    shipped = [json.loads(line) for line in TRAIN_PATH.read_text(encoding="utf-8").splitlines()]
    assert build() == shipped
    train, dev = build(hold_out=True)
    assert dev and not {r["text"] for r in train} & {r["text"] for r in dev}
