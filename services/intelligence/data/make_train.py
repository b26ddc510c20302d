"""Writes train.jsonl: contact-centre messages composed from the phrase pools of `phrases.py`.

Deterministic (seeded). The evaluation set (tests/benchmarks/data/classify_eval.jsonl) was written
separately by hand and is never read here; tests/unit/test_classify.py asserts the two are disjoint.

Each row is a core message of a language, intent and tone (neutral questions and requests; the same
topics told with frustration, negative; or with warmth, positive; complaints are negative, praise
positive), dressed with openers, order references and closers as people write them, sometimes lower
case, and in Spanish often without accents. A negative or positive tag line may join a neutral
request and sets its tone. `build(hold_out=True)` keeps every fifth core phrase out of training and
returns its rows as a development split, for tuning the model without the evaluation set.

Run: python -m services.intelligence.data.make_train
"""

from __future__ import annotations

import json
import random
import unicodedata
from pathlib import Path

from services.intelligence.data.phrases import EN, ES, FEW

POOLS = {"en": EN, "es": ES}
OPENERS = {
    "en": [
        "",
        "",
        "",
        "Hi, ",
        "Hello, ",
        "hey ",
        "Good morning, ",
        "Hi there. ",
        "Dear team, ",
        "URGENT: ",
        "Quick question: ",
    ],
    "es": [
        "",
        "",
        "",
        "Hola, ",
        "Buenas, ",
        "hola ",
        "Buenos dias, ",
        "Hola que tal. ",
        "Estimados, ",
        "URGENTE: ",
        "Una pregunta: ",
    ],
}
REFERENCES = {
    "en": [
        "",
        "",
        "",
        "",
        " (order 48213)",
        ", order number 10294",
        ". Ref A-5521",
        ", it's for order #77310",
        ". My name is Sam Ortiz",
    ],
    "es": [
        "",
        "",
        "",
        "",
        " (pedido 48213)",
        ", numero de pedido 10294",
        ". Ref A-5521",
        ", es del pedido #77310",
        ". Soy Marta Ruiz",
    ],
}
CLOSERS = {
    "en": [
        "",
        "",
        "",
        ".",
        "?",
        " thanks",
        " please",
        ". Regards, Tom",
        " asap",
        ". Thank you in advance.",
        ". Cheers",
    ],
    "es": [
        "",
        "",
        "",
        ".",
        "?",
        " gracias",
        " por favor",
        ". Un saludo, Ana",
        " cuanto antes",
        ". Gracias de antemano.",
        ". Saludos",
    ],
}
NEG_TAGS = {
    "en": [
        " This is really annoying.",
        " I'm getting frustrated.",
        " Not happy at all.",
        " Sort it out!",
        " This is the second time.",
        " Honestly fed up.",
        " Unbelievable.",
        " Very disappointed.",
        " I'm losing patience.",
        " Nobody has answered my emails.",
    ],
    "es": [
        " Esto es muy molesto.",
        " Ya me estoy cansando.",
        " Nada contento.",
        " Arreglenlo ya!",
        " Es la segunda vez.",
        " Estoy harta.",
        " Increible.",
        " Muy decepcionado.",
        " Se me acaba la paciencia.",
        " Nadie contesta mis correos.",
    ],
}
POS_TAGS = {
    "en": [
        " Thanks a lot, you're great.",
        " Appreciate it!",
        " Lovely service so far.",
        " You've been brilliant.",
        " Love your shop!",
    ],
    "es": [
        " Mil gracias, sois geniales.",
        " Os lo agradezco!",
        " Muy buen servicio hasta ahora.",
        " Sois un encanto.",
        " Me encanta vuestra tienda!",
    ],
}
# Rows per language and intent, and for the topics (not complaint/praise/other) the share of each tone.
PER_INTENT = 160
TONES = (("neutral", 0.62), ("negative", 0.22), ("positive", 0.16))
HOLD_OUT_EVERY = 5


def strip_accents(text: str) -> str:
    return (
        "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
        .replace("¿", "")
        .replace("¡", "")
    )


def _pick_tone(rng: random.Random, tones: dict[str, list[str]]) -> str:
    if len(tones) == 1:
        return next(iter(tones))
    r, acc = rng.random(), 0.0
    for tone, share in TONES:
        acc += share
        if r < acc:
            return tone
    return "neutral"


def _compose(rng: random.Random, lang: str, core: str, tone: str, tagged: str) -> str:
    text = rng.choice(OPENERS[lang]) + core + rng.choice(REFERENCES[lang]) + rng.choice(CLOSERS[lang])
    if tagged == "negative":
        text += rng.choice(NEG_TAGS[lang])
    elif tagged == "positive":
        text = (
            text + rng.choice(POS_TAGS[lang]) if rng.random() < 0.5 else rng.choice(POS_TAGS[lang]).strip() + " " + text
        )
    if tone == "negative" and rng.random() < 0.15:
        text = text.upper() if rng.random() < 0.3 else text + "!!"
    if rng.random() < 0.3:
        text = text.lower()
    if lang == "es" and rng.random() < 0.5:
        text = strip_accents(text)
    return text


def build(
    seed: int = 12, hold_out: bool = False
) -> list[dict[str, str]] | tuple[list[dict[str, str]], list[dict[str, str]]]:
    rng = random.Random(seed)
    train: list[dict[str, str]] = []
    dev: list[dict[str, str]] = []
    seen: set[str] = set()

    def add(rows: list[dict[str, str]], text: str, lang: str, sentiment: str, intent: str) -> bool:
        if text in seen:
            return False
        seen.add(text)
        rows.append({"text": text, "language": lang, "sentiment": sentiment, "intent": intent})
        return True

    for lang, intents in POOLS.items():
        for intent, tones in intents.items():
            split = {
                tone: (
                    [c for i, c in enumerate(cores) if not hold_out or i % HOLD_OUT_EVERY != HOLD_OUT_EVERY - 1],
                    [c for i, c in enumerate(cores) if hold_out and i % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1],
                )
                for tone, cores in tones.items()
            }
            for rows, which, target in ((train, 0, PER_INTENT), (dev, 1, PER_INTENT // 4)):
                if not any(s[which] for s in split.values()):
                    continue
                n = tries = 0
                while n < target and tries < target * 20:
                    tries += 1
                    tone = _pick_tone(rng, tones)
                    cores = split[tone][which]
                    tagged = ""
                    if not cores:  # a tone without cores here: a neutral request with a tone's tag line
                        cores, tagged = split["neutral"][which], tone
                    elif tone == "neutral" and intent not in ("other",) and rng.random() < 0.12:
                        tagged = tone = rng.choice(("negative", "positive"))
                    if not cores:
                        continue
                    text = _compose(rng, lang, rng.choice(cores), tone, tagged)
                    n += add(rows, text, lang, tone, intent)
    for lang, intents in FEW.items():
        for intent, cores in intents.items():
            sentiment = {"complaint": "negative", "praise": "positive"}.get(intent, "neutral")
            for core in cores:
                add(train, core, lang, sentiment, intent)
                add(
                    train,
                    core[0].upper() + core[1:] + ("?" if sentiment == "neutral" else "."),
                    lang,
                    sentiment,
                    intent,
                )
    return (train, dev) if hold_out else train


if __name__ == "__main__":
    out = Path(__file__).with_name("train.jsonl")
    rows = build()
    assert isinstance(rows, list)
    with out.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
