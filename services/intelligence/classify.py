"""Classification of inbound messages: language, sentiment and intent, computed on this machine.

- **language** (ISO 639-1): lingua-language-detector restricted to `LANGUAGES` (restricting the set
  is what makes it both accurate on short texts and fast); no text leaves the process.
- **sentiment** (`negative`, `neutral`, `positive`) and **intent** (a configurable label set): a
  TF-IDF of word 1-2-grams plus character 2-5-grams (robust to typos and missing accents) feeding a
  logistic regression each, trained from the shipped data (`data/train.jsonl`) at first use, in a
  second or two, and cached per process. Nothing is downloaded.

A custom intent label set: pass `intents=(...)`; training rows whose intent is not in the set count
as "other", and a message whose best intent probability is below `other_below` is "other" too. To
teach new labels, add rows `{"text", "language", "sentiment", "intent"}` to a JSONL file and pass it
as `extra_training` (it is added to the shipped rows).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

TRAIN_PATH = Path(__file__).with_name("data") / "train.jsonl"
DEFAULT_INTENTS: tuple[str, ...] = (
    "billing", "delivery", "returns", "account", "technical", "complaint", "praise", "other",
)  # fmt: skip
SENTIMENTS = ("negative", "neutral", "positive")
# Languages the detector chooses among (ISO 639-1). A short list is what keeps short messages right.
LANGUAGES: tuple[str, ...] = ("en", "es", "fr", "pt", "de", "it", "ca", "nl")


@dataclass(frozen=True, slots=True)
class Classification:
    language: str  # ISO 639-1, "" when undetermined (empty text)
    sentiment: str
    intent: str
    confidence: float  # the intent's probability


def load_rows(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _language_detector(codes: Sequence[str]):  # type: ignore[no-untyped-def]
    from lingua import IsoCode639_1, LanguageDetectorBuilder

    isos = [getattr(IsoCode639_1, c.upper()) for c in codes]
    return LanguageDetectorBuilder.from_iso_codes_639_1(*isos).with_preloaded_language_models().build()


def _text_model(texts: list[str], labels: list[str]):  # type: ignore[no-untyped-def]
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    features = make_union(
        TfidfVectorizer(
            analyzer="word", ngram_range=(1, 2), lowercase=True, strip_accents="unicode", sublinear_tf=True
        ),
        TfidfVectorizer(
            analyzer="char_wb", ngram_range=(2, 5), lowercase=True, strip_accents="unicode", sublinear_tf=True
        ),
    )
    model = make_pipeline(features, LogisticRegression(C=10.0, max_iter=2000))
    model.fit(texts, labels)
    return model


class Classifier:
    def __init__(
        self,
        intents: Sequence[str] = DEFAULT_INTENTS,
        *,
        languages: Sequence[str] = LANGUAGES,
        extra_training: Path | None = None,
        other_below: float = 0.25,
    ) -> None:
        self.intents = tuple(dict.fromkeys([*intents, "other"]))
        self.other_below = other_below
        rows = load_rows(TRAIN_PATH) + (load_rows(extra_training) if extra_training else [])
        texts = [r["text"] for r in rows]
        self._sentiment = _text_model(texts, [r["sentiment"] for r in rows])
        self._intent = _text_model(texts, [r["intent"] if r["intent"] in self.intents else "other" for r in rows])
        self._languages = _language_detector(languages)

    def classify_many(self, texts: Iterable[str]) -> list[Classification]:
        texts = [t or "" for t in texts]
        if not texts:
            return []
        langs = self._languages.detect_languages_in_parallel_of(texts)
        sentiments = self._sentiment.predict(texts)
        probs = self._intent.predict_proba(texts)
        classes = list(self._intent.classes_)
        out = []
        for text, lang, sentiment, p in zip(texts, langs, sentiments, probs, strict=True):
            best = int(p.argmax())
            intent, confidence = classes[best], float(p[best])
            if confidence < self.other_below:
                intent = "other"
            code = lang.iso_code_639_1.name.lower() if lang is not None and text.strip() else ""
            out.append(Classification(code, str(sentiment), str(intent), round(confidence, 3)))
        return out

    def classify(self, text: str) -> Classification:
        return self.classify_many([text])[0]


_default: Classifier | None = None
_lock = threading.Lock()


def default_classifier() -> Classifier:
    """The default-label classifier, trained once per process on first use."""
    global _default
    with _lock:
        if _default is None:
            _default = Classifier()
        return _default
