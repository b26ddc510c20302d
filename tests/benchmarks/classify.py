"""Message classification on the shipped evaluation set (tests/benchmarks/data/classify_eval.jsonl).

The evaluation set was written by hand for this project and is never used for training
(tests/unit/test_classify_data.py checks they are disjoint). Everything runs pinned to one core.

- **switchboard**: `services.intelligence.classify.Classifier` (lingua restricted to 8 languages in
  high-accuracy mode; TF-IDF + logistic regression for sentiment and intent, trained from
  services/intelligence/data/train.jsonl at start-up, the training time is printed).
- **naive** baseline: a keyword matcher (English and Spanish keyword lists per intent and sentiment,
  the first hit wins, else "other"/"neutral").
- **language alternatives**: lingua in low-accuracy mode (faster, fewer n-grams) and lingua over all
  its 75 languages, both measured here for accuracy and speed.

Throughput is the classifier's own, in batches of 500 as the core would call it, over the evaluation
set repeated. The last line is the summary:
`classify: language_acc=N sentiment_acc=N intent_acc=N msgs_per_s=N`
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from services.intelligence.classify import LANGUAGES, Classifier, load_rows

EVAL = Path(__file__).with_name("data") / "classify_eval.jsonl"
BATCH = 500
REPEAT = 20

KEYWORDS = {
    "billing": ("charge", "invoice", "bill", "payment", "fee", "cobr", "factura", "pago", "cargo", "recibo"),
    "delivery": ("deliver", "parcel", "package", "tracking", "courier", "envio", "paquete", "entrega", "reparto"),
    "returns": ("return", "refund", "exchange", "devol", "reembolso", "cambiar"),
    "account": ("account", "password", "login", "log in", "email", "cuenta", "contraseña", "correo", "sesion"),
    "technical": ("app", "error", "crash", "wifi", "update", "screen", "pantalla", "actualiz", "funciona"),
    "complaint": ("complaint", "worst", "rude", "unacceptable", "queja", "peor", "reclamacion", "inaceptable"),
    "praise": ("thank", "great", "amazing", "excellent", "gracias", "genial", "excelente", "estupend"),
}
NEGATIVE = ("not ", "never", "worst", "terrible", "unacceptable", "still", "no ", "nunca", "peor", "sigue", "harto")
POSITIVE = ("thank", "great", "love", "amazing", "excellent", "gracias", "genial", "encanta", "excelente")


def keyword_intent(text: str) -> str:
    low = text.lower()
    return next((label for label, words in KEYWORDS.items() if any(w in low for w in words)), "other")


def keyword_sentiment(text: str) -> str:
    low = text.lower()
    if any(w in low for w in NEGATIVE):
        return "negative"
    return "positive" if any(w in low for w in POSITIVE) else "neutral"


def accuracy(predicted: Sequence[str], truth: Sequence[str]) -> float:
    return sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)


def rate(fn: Callable[[list[str]], object], texts: list[str]) -> float:
    work = texts * REPEAT
    t0 = time.perf_counter()
    for i in range(0, len(work), BATCH):
        fn(work[i : i + BATCH])
    return len(work) / (time.perf_counter() - t0)


def lingua_codes(detector, texts: list[str]) -> list[str]:  # type: ignore[no-untyped-def]
    return [(x.iso_code_639_1.name.lower() if x else "") for x in detector.detect_languages_in_parallel_of(texts)]


def main() -> str:
    from lingua import IsoCode639_1, LanguageDetectorBuilder

    rows = load_rows(EVAL)
    texts = [r["text"] for r in rows]
    truth = {k: [r[k] for r in rows] for k in ("language", "sentiment", "intent")}
    spanish_english = sum(r["language"] in ("en", "es") for r in rows)
    print(f"   eval set: {len(rows)} messages ({spanish_english} English or Spanish)")

    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(affinity)})
    try:
        t0 = time.perf_counter()
        clf = Classifier()
        print(f"   training from shipped data: {time.perf_counter() - t0:.1f}s")
        got = clf.classify_many(texts)
        acc = {k: accuracy([getattr(g, k) for g in got], truth[k]) for k in truth}
        per_s = rate(clf.classify_many, texts)
        print(
            f"   switchboard: language={acc['language']:.3f} sentiment={acc['sentiment']:.3f} "
            f"intent={acc['intent']:.3f} msgs/s={per_s:,.0f} (one core)"
        )
        for lang in ("en", "es"):
            idx = [i for i, r in enumerate(rows) if r["language"] == lang]
            s = accuracy([got[i].sentiment for i in idx], [truth["sentiment"][i] for i in idx])
            n = accuracy([got[i].intent for i in idx], [truth["intent"][i] for i in idx])
            print(f"     {lang}: sentiment={s:.3f} intent={n:.3f} ({len(idx)} messages)")

        kw_s = accuracy([keyword_sentiment(t) for t in texts], truth["sentiment"])
        kw_i = accuracy([keyword_intent(t) for t in texts], truth["intent"])
        kw_rate = rate(lambda batch: [(keyword_intent(t), keyword_sentiment(t)) for t in batch], texts)
        print(f"   naive keyword matcher: sentiment={kw_s:.3f} intent={kw_i:.3f} msgs/s={kw_rate:,.0f}")

        isos = [getattr(IsoCode639_1, c.upper()) for c in LANGUAGES]
        alternatives = {
            "lingua 8 languages, low-accuracy mode": LanguageDetectorBuilder.from_iso_codes_639_1(*isos)
            .with_low_accuracy_mode()
            .with_preloaded_language_models()
            .build(),
            "lingua all 75 languages": LanguageDetectorBuilder.from_all_languages()
            .with_preloaded_language_models()
            .build(),
        }
        for name, detector in alternatives.items():
            a = accuracy(lingua_codes(detector, texts), truth["language"])
            r = rate(lambda batch, d=detector: lingua_codes(d, batch), texts)
            print(f"   language alternative, {name}: language={a:.3f} msgs/s={r:,.0f} (language only)")
    finally:
        os.sched_setaffinity(0, affinity)
    return (
        f"classify: language_acc={acc['language']:.3f} sentiment_acc={acc['sentiment']:.3f} "
        f"intent_acc={acc['intent']:.3f} msgs_per_s={per_s:.0f}"
    )


if __name__ == "__main__":
    print(main())
