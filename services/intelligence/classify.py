"""Classification of inbound messages: language, sentiment and intent, computed on this machine.

- **language** (ISO 639-1): lingua-language-detector restricted to `LANGUAGES` (restricting the set
  is what makes it both accurate on short texts and fast); no text leaves the process.
- **sentiment** (`negative`, `neutral`, `positive`) and **intent** (a configurable label set): a
  TF-IDF of word 1-2-grams plus character 2-5-grams (robust to typos and missing accents) feeding a
  logistic regression each, trained from the shipped data (`data/train.jsonl`) at first use, in a
  second or two, and cached per process. Nothing is downloaded.

Labels of your own: `training=PATH` (the setting `SWITCHBOARD_CLASSIFIER_DATA`) names a JSONL file of
rows `{"text", "intent", "sentiment"?}` that replaces the shipped rows for intent: its intents are
the label set (plus "other"). Rows with a `sentiment` also train the sentiment model, on top of the
shipped rows. `check_training` says what is wrong with such a file, line by line. Alternatively
`intents=(...)` narrows the shipped labels (rows of other intents count as "other") and
`extra_training` adds rows to the shipped ones. A message whose best intent probability is below
`other_below` is "other".

How the shipped figures were reached (tests/benchmarks/classify.py): a larger, varied generator
(services/intelligence/data/make_train.py: ~35 request phrasings per intent and language, the same
topics told angrily and warmly, complaints vs. a negative message about a topic, en/es plus a few
rows of fr/pt/de/it) moved sentiment from 0.74 to 0.89 and intent from 0.76 to 0.88; dropping
character n-grams seen once (`min_df=2`) keeps training to a second or two.
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


class TrainingDataError(ValueError):
    """A training file that cannot train a classifier; the message names the file and line."""


def check_training(path: Path) -> list[dict[str, str]]:
    """The rows of a custom training file, or TrainingDataError saying what is wrong (and where)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainingDataError(f"{path}: cannot read it ({type(exc).__name__})") from None
    rows: list[dict[str, str]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise TrainingDataError(f"{path}:{number}: not a JSON object") from None
        if not isinstance(row, dict):
            raise TrainingDataError(f"{path}:{number}: not a JSON object")
        for key in ("text", "intent"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise TrainingDataError(f"{path}:{number}: `{key}` must be a non-empty string")
        if "sentiment" in row and row["sentiment"] not in SENTIMENTS:
            raise TrainingDataError(f"{path}:{number}: `sentiment` must be one of {', '.join(SENTIMENTS)}")
        rows.append(row)
    if len({r["intent"] for r in rows}) < 2:
        raise TrainingDataError(f"{path}: needs rows of at least two intents")
    return rows


def _language_detector(codes: Sequence[str]):  # type: ignore[no-untyped-def]
    from lingua import IsoCode639_1, LanguageDetectorBuilder

    isos = [getattr(IsoCode639_1, c.upper()) for c in codes]
    return LanguageDetectorBuilder.from_iso_codes_639_1(*isos).with_preloaded_language_models().build()


def _features(texts: list[str]):  # type: ignore[no-untyped-def]
    """Word 1-2-grams and character 2-5-grams (seen at least twice), TF-IDF weighted; fitted once and
    shared by both models, so a message is turned into features once."""
    from sklearn.feature_extraction.text import TfidfVectorizer  # type: ignore[import-untyped]
    from sklearn.pipeline import make_union  # type: ignore[import-untyped]

    features = make_union(
        TfidfVectorizer(
            analyzer="word", ngram_range=(1, 2), lowercase=True, strip_accents="unicode", sublinear_tf=True
        ),
        TfidfVectorizer(
            analyzer="char_wb",
            ngram_range=(2, 5),
            lowercase=True,
            strip_accents="unicode",
            sublinear_tf=True,
            min_df=2,
        ),
    )
    features.fit(texts)
    return features


def _linear_model(x, labels: list[str]):  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    model = LogisticRegression(C=10.0, max_iter=2000)
    model.fit(x, labels)
    return model


class Classifier:
    def __init__(
        self,
        intents: Sequence[str] = DEFAULT_INTENTS,
        *,
        languages: Sequence[str] = LANGUAGES,
        extra_training: Path | None = None,
        training: Path | None = None,
        other_below: float = 0.25,
    ) -> None:
        rows = load_rows(TRAIN_PATH) + (load_rows(extra_training) if extra_training else [])
        if training is not None:
            custom = check_training(training)
            intents = tuple(sorted({r["intent"] for r in custom}))
            sentiment_rows = rows + [r for r in custom if "sentiment" in r]
            intent_rows = custom
        else:
            sentiment_rows = intent_rows = rows
        self.intents = tuple(dict.fromkeys([*intents, "other"]))
        self.other_below = other_below
        self._features = _features(list(dict.fromkeys(r["text"] for r in [*sentiment_rows, *intent_rows])))
        self._sentiment = _linear_model(
            self._features.transform([r["text"] for r in sentiment_rows]), [r["sentiment"] for r in sentiment_rows]
        )
        self._intent = _linear_model(
            self._features.transform([r["text"] for r in intent_rows]),
            [r["intent"] if r["intent"] in self.intents else "other" for r in intent_rows],
        )
        self._languages = _language_detector(languages)

    def classify_many(self, texts: Iterable[str]) -> list[Classification]:
        texts = [t or "" for t in texts]
        if not texts:
            return []
        langs = self._languages.detect_languages_in_parallel_of(texts)
        x = self._features.transform(texts)
        sentiments = self._sentiment.predict(x)
        probs = self._intent.predict_proba(x)
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


_trained: dict[str | None, Classifier] = {}
_lock = threading.Lock()


def default_classifier(training: str | Path | None = None) -> Classifier:
    """The classifier of the shipped labels (or of a `training` file's), trained once per process on
    first use."""
    key = str(training) if training else None
    with _lock:
        if key not in _trained:
            _trained[key] = Classifier(training=Path(key) if key else None)
        return _trained[key]
