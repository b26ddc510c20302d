"""Writes train.jsonl: contact-centre messages composed from phrase pools written for this project.

Deterministic (seeded). The evaluation set (tests/benchmarks/data/classify_eval.jsonl) was written
separately by hand and is never read here; tests/unit/test_classify.py asserts the two are disjoint.
Run: python -m services.intelligence.data.make_train
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CORE = {
    "en": {
        "billing": [
            "I was charged twice this month",
            "my invoice shows the wrong amount",
            "why is my bill higher than usual",
            "can you send me a copy of the invoice",
            "there's an extra fee on my statement I dont recognise",
            "the payment went out of my card two times",
            "I need a VAT receipt for my last payment",
            "how do I change the card you charge",
            "my direct debit failed, what do I owe",
            "you billed me after I cancelled",
            "the discount code wasnt applied to the total",
            "when will the pending charge clear",
        ],
        "delivery": [
            "where is my order",
            "my parcel hasnt arrived yet",
            "tracking hasnt updated in 4 days",
            "the courier said delivered but nothing here",
            "when will my package get here",
            "can I change the delivery address",
            "order 55821 still says processing",
            "the driver left it at the wrong house",
            "is next day shipping available to my area",
            "my delivery was supposed to come yesterday",
            "can you reschedule the delivery for friday",
            "box arrived but half the items missing",
        ],
        "returns": [
            "I want to return these shoes",
            "how do I send back an item",
            "can I get a refund for the jacket",
            "I need a return label please",
            "the item doesnt fit, can I exchange it",
            "I sent the return two weeks ago, where is my refund",
            "what is your returns policy",
            "can I return something bought in the sale",
            "please arrange a pickup for the return",
            "I'd like to swap it for a bigger size",
            "returned the blender but no money back yet",
            "is the return free or do I pay postage",
        ],
        "account": [
            "I cant log in to my account",
            "how do I reset my password",
            "please update my email address",
            "I want to delete my account",
            "my account got locked",
            "change the phone number on my profile",
            "I never got the verification code",
            "how do I unsubscribe from marketing emails",
            "someone else may be using my account",
            "can I merge my two accounts",
            "update my postal address please",
            "I forgot which email I signed up with",
        ],
        "technical": [
            "the app keeps crashing when I open it",
            "your website wont load on my phone",
            "checkout page gives an error 500",
            "the router wont connect to wifi",
            "I get a blank screen after the update",
            "the device wont turn on",
            "bluetooth pairing fails every time",
            "the app is really slow since yesterday",
            "I cant upload photos, it just spins",
            "error code E42 on the display",
            "the firmware update got stuck at 80%",
            "notifications stopped working on android",
        ],
        "complaint": [
            "this is the worst service I have ever had",
            "I am extremely unhappy with how I was treated",
            "nobody ever answers the phone, ridiculous",
            "I want to make a formal complaint",
            "your staff were rude to me in store",
            "third time I'm writing and still nothing, disgraceful",
            "I've been a customer for years and this is how you treat me",
            "absolutely unacceptable, I want to speak to a manager",
            "your agent hung up on me",
            "terrible experience from start to finish",
            "I'm fed up with the excuses",
            "oh great, another week of waiting, brilliant service as always",
        ],
        "praise": [
            "thank you so much for your help",
            "the agent was fantastic",
            "great service, really impressed",
            "just wanted to say thanks to Laura, she sorted everything",
            "love the product, works perfectly",
            "super fast delivery, well done",
            "best customer service I've dealt with",
            "you guys are amazing",
            "really appreciate the quick reply",
            "very happy with my purchase",
            "excellent support, problem solved in minutes",
            "kudos to your team, keep it up",
        ],
        "other": [
            "what are your opening hours",
            "do you have a store in Leeds",
            "are you hiring at the moment",
            "do you sell gift cards",
            "is this product available in blue",
            "who do I contact about a partnership",
            "do you ship to Canada",
            "hi",
            "ok",
            "can I talk to someone",
            "what is the price of the premium plan",
            "are you open on sunday",
        ],
    },
    "es": {
        "billing": [
            "me cobraron dos veces este mes",
            "la factura tiene un importe equivocado",
            "por que mi recibo es mas caro que el mes pasado",
            "me pueden enviar una copia de la factura",
            "hay un cargo extra que no reconozco",
            "me pasaron el cobro dos veces en la tarjeta",
            "necesito la factura con mi NIF",
            "como cambio la tarjeta de pago",
            "fallo la domiciliacion, cuanto debo",
            "me siguen cobrando despues de darme de baja",
            "no me aplicaron el codigo de descuento",
            "cuando se libera el cargo pendiente",
        ],
        "delivery": [
            "donde esta mi pedido",
            "mi paquete todavia no ha llegado",
            "el seguimiento no se actualiza desde hace 4 dias",
            "pone entregado pero aqui no hay nada",
            "cuando llega mi paquete",
            "puedo cambiar la direccion de entrega",
            "el pedido 55821 sigue en preparacion",
            "el repartidor lo dejo en otra casa",
            "hacen envio urgente a mi zona",
            "el envio tenia que llegar ayer",
            "pueden entregarlo el viernes",
            "llego la caja pero faltan articulos",
        ],
        "returns": [
            "quiero devolver estas zapatillas",
            "como hago una devolucion",
            "me pueden reembolsar la chaqueta",
            "necesito una etiqueta de devolucion",
            "no me queda bien, puedo cambiarlo",
            "envie la devolucion hace dos semanas y no me han devuelto el dinero",
            "cual es la politica de devoluciones",
            "puedo devolver algo comprado en rebajas",
            "pueden pasar a recoger la devolucion",
            "quiero cambiarlo por una talla mas",
            "devolvi la batidora y aun no tengo el reembolso",
            "la devolucion es gratis o pago yo el envio",
        ],
        "account": [
            "no puedo entrar en mi cuenta",
            "como cambio la contraseña",
            "actualicen mi correo electronico por favor",
            "quiero borrar mi cuenta",
            "mi cuenta esta bloqueada",
            "cambien el telefono de mi perfil",
            "no me llega el codigo de verificacion",
            "como me doy de baja de los correos de publicidad",
            "creo que alguien usa mi cuenta",
            "puedo unir mis dos cuentas",
            "cambien mi direccion postal por favor",
            "no recuerdo con que correo me registre",
        ],
        "technical": [
            "la aplicacion se cierra sola al abrirla",
            "la web no carga en el movil",
            "la pagina de pago da error 500",
            "el router no se conecta al wifi",
            "se queda la pantalla en negro despues de actualizar",
            "el aparato no enciende",
            "el bluetooth no empareja nunca",
            "la app va lentisima desde ayer",
            "no puedo subir fotos, se queda cargando",
            "sale el codigo de error E42 en la pantalla",
            "la actualizacion se quedo atascada en el 80%",
            "dejaron de funcionar las notificaciones en android",
        ],
        "complaint": [
            "es el peor servicio que he tenido nunca",
            "estoy muy descontento con el trato recibido",
            "nadie contesta el telefono, es una verguenza",
            "quiero poner una reclamacion formal",
            "el personal de la tienda fue muy grosero",
            "es la tercera vez que escribo y nada, vergonzoso",
            "llevo años siendo cliente y asi me tratan",
            "totalmente inaceptable, quiero hablar con un responsable",
            "la agente me colgo el telefono",
            "una experiencia horrible de principio a fin",
            "estoy harto de tantas excusas",
            "genial, otra semana esperando, que gran servicio como siempre",
        ],
        "praise": [
            "muchas gracias por la ayuda",
            "la agente fue estupenda",
            "un servicio excelente, estoy impresionado",
            "solo queria dar las gracias a Lucia, lo soluciono todo",
            "me encanta el producto, funciona perfecto",
            "entrega rapidisima, enhorabuena",
            "la mejor atencion al cliente que he tenido",
            "sois geniales",
            "agradezco mucho la respuesta tan rapida",
            "muy contento con la compra",
            "soporte excelente, resuelto en minutos",
            "felicidades al equipo, seguid asi",
        ],
        "other": [
            "cual es el horario de apertura",
            "tienen tienda en Valencia",
            "estan contratando personal",
            "venden tarjetas regalo",
            "este producto lo tienen en azul",
            "con quien hablo para una colaboracion",
            "envian a Mexico",
            "hola",
            "vale",
            "puedo hablar con alguien",
            "cuanto cuesta el plan premium",
            "abren los domingos",
        ],
    },
}
OPENERS = {
    "en": ["", "", "Hi, ", "Hello, ", "hey ", "Good morning, ", "Dear team, ", "URGENT: "],
    "es": ["", "", "Hola, ", "Buenas, ", "hola ", "Buenos dias, ", "Estimados, ", "URGENTE: "],
}
CLOSERS = {
    "en": ["", "", ".", "?", " thanks", " please", ". Regards, Tom", " asap", "!!", ". Thank you in advance."],
    "es": [
        "",
        "",
        ".",
        "?",
        " gracias",
        " por favor",
        ". Un saludo, Ana",
        " cuanto antes",
        "!!",
        ". Gracias de antemano.",
    ],
}
NEG = {
    "en": [" This is really annoying.", " I'm getting frustrated.", " Not happy at all."],
    "es": [" Esto es muy molesto.", " Ya me estoy cansando.", " Nada contento."],
}
POS = {
    "en": [" Thanks a lot, you're great.", " Appreciate it!", " Lovely service so far."],
    "es": [" Mil gracias, sois geniales.", " Os lo agradezco!", " Muy buen servicio hasta ahora."],
}
PER_INTENT = 70


def sentiment_of(intent: str, mood: str) -> str:
    return {"complaint": "negative", "praise": "positive"}.get(intent, mood)


def build(seed: int = 12) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    for lang, intents in CORE.items():
        for intent, cores in intents.items():
            n = 0
            while n < PER_INTENT:
                mood = (
                    rng.choice(["neutral", "neutral", "negative", "positive"])
                    if intent not in ("complaint", "praise")
                    else ""
                )
                text = rng.choice(OPENERS[lang]) + rng.choice(cores) + rng.choice(CLOSERS[lang])
                if mood == "negative":
                    text += rng.choice(NEG[lang])
                elif mood == "positive":
                    text += rng.choice(POS[lang])
                if rng.random() < 0.3:
                    text = text.lower()
                if text in seen:
                    continue
                seen.add(text)
                rows.append(
                    {
                        "text": text,
                        "language": lang,
                        "sentiment": sentiment_of(intent, mood or "neutral"),
                        "intent": intent,
                    }
                )
                n += 1
    return rows


if __name__ == "__main__":
    out = Path(__file__).with_name("train.jsonl")
    with out.open("w", encoding="utf-8") as f:
        for row in build():
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
