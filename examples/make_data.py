"""Write the small synthetic datasets the example `.mix` files read.

Takes nothing but a seed and an output folder; produces JSON Lines files under `examples/data/`
(or `--out DIR`). Everything is generated from templates and small vocabularies with seeded
stdlib `random`, so a rerun writes byte-identical files and nothing touches the network:

    customer/train.jsonl       chat records: classify a piece of customer feedback
    customer/test.jsonl        held-out {text, category} pairs for the `classify` metric
    general/train.jsonl        curated general instructions as {question, answer}
    mmlu/test.jsonl            MMLU-style {question, choices, answer} multiple choice
    multilingual/{en,de,fr,sw}.jsonl   {text} records of deliberately unequal sizes

Usage: python examples/make_data.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path
from typing import Callable, Iterable

SEED = 17
Record = dict[str, object]

# ---- customer feedback ------------------------------------------------------------------

SYSTEM = ("You classify customer feedback into exactly one category: "
          "billing, shipping, product_quality, support, pricing, other.")
PRODUCTS = ("the blender|my headset|the desk lamp|the toaster|the coffee maker|my phone case|"
            "the office chair|the air purifier|the backpack|the smart watch|the kettle|"
            "the yoga mat").split("|")
CITIES = "Leeds|Porto|Denver|Nairobi|Lyon|Osaka|Austin|Gdansk".split("|")
ISSUES: dict[str, list[str]] = {
    "billing": [
        "I was charged twice for {product}", "my invoice shows ${amount} but I paid ${amount2}",
        "the refund for {product} still hasn't reached my card after {days} days",
        "my card was billed again after I cancelled",
        "there is a charge on my statement I don't recognise",
        "the payment failed but the money left my account",
        "I never received a receipt for {product}",
        "you took ${amount} from my account without asking"],
    "shipping": [
        "{product} arrived {days} days late", "the tracking number hasn't updated in {days} days",
        "the parcel was delivered to the wrong address",
        "{product} was left in the rain outside my door",
        "the courier marked {product} as delivered but nothing came",
        "delivery was promised for Monday and it's now {days} days later",
        "the box for {product} was crushed in transit", "my order is stuck at the depot in {city}"],
    "product_quality": [
        "{product} stopped working after {days} days", "{product} arrived with a cracked casing",
        "the stitching on {product} came apart in a week", "{product} smells of burnt plastic",
        "the battery in {product} barely lasts an hour", "{product} feels cheap and flimsy",
        "the colour of {product} faded after one wash", "{product} makes a loud rattling noise"],
    "support": [
        "I waited {minutes} minutes on hold and nobody answered",
        "the agent hung up on me mid-sentence", "I emailed support {times} times and got no reply",
        "the chat bot keeps sending me in circles", "the person I spoke to was rude and unhelpful",
        "nobody could tell me what happened to my ticket",
        "support promised a call back that never came",
        "I was transferred {times} times and still have no answer"],
    "pricing": [
        "{product} costs ${amount} here but much less elsewhere",
        "the price went up {pct}% without notice",
        "your subscription is too expensive for what it offers",
        "shipping fees cost more than {product} itself",
        "the discount code didn't lower the price at all",
        "the premium plan is overpriced compared to competitors",
        "I can't justify paying ${amount} a month any more",
        "{product} was cheaper last week, why the increase?"],
    "other": [
        "your website is hard to navigate on a phone", "I love the new logo",
        "please open a store in {city}", "the newsletter arrives too often",
        "could you add a dark mode to the app?", "I wanted to say the staff in {city} were lovely",
        "the font on your site is too small to read",
        "do you plan to sponsor local events in {city}?"],
}
OPENERS = ["", "", "Hi, ", "Hello team, ", "Quick note: ", "Not happy. ",
           "To whom it may concern, ", "Hey, "]
CLOSERS = ["", "", " Please fix this.", " Thanks.", " Can someone look into it?",
           " This is the second time.", " Just letting you know.", " I expect better."]


def feedback_text(rng: random.Random, category: str) -> str:
    """One piece of feedback: opener, a filled-in issue, closer."""
    issue = rng.choice(ISSUES[category]).format(
        product=rng.choice(PRODUCTS), city=rng.choice(CITIES), days=rng.randint(2, 21),
        minutes=rng.choice([20, 30, 45, 60, 90]), times=rng.randint(2, 6),
        pct=rng.choice([10, 15, 20, 30]), amount=rng.randint(9, 200), amount2=rng.randint(9, 200))
    opener = rng.choice(OPENERS)
    issue = issue[0].upper() + issue[1:] if opener in ("", "Not happy. ", "Quick note: ") else issue
    return f"{opener}{issue}.{rng.choice(CLOSERS)}".replace("?.", "?")


def customer_pairs(rng: random.Random, n: int, exclude: set[str]) -> list[tuple[str, str]]:
    """`n` distinct (text, category) pairs, classes balanced, no text from `exclude`."""
    pairs: list[tuple[str, str]] = []
    seen = set(exclude)
    while len(pairs) < n:
        category = sorted(ISSUES)[len(pairs) % len(ISSUES)]
        text = feedback_text(rng, category)
        if text not in seen:
            seen.add(text)
            pairs.append((text, category))
    rng.shuffle(pairs)
    return pairs


def chat_record(text: str, category: str) -> Record:
    return {"messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": f"Classify this feedback: {text}"},
                         {"role": "assistant", "content": category}]}


# ---- general knowledge ------------------------------------------------------------------

CAPITALS = dict(pair.split(":") for pair in (
    "France:Paris|Germany:Berlin|Italy:Rome|Spain:Madrid|Portugal:Lisbon|Japan:Tokyo|"
    "China:Beijing|India:New Delhi|Kenya:Nairobi|Egypt:Cairo|Brazil:Brasilia|"
    "Argentina:Buenos Aires|Canada:Ottawa|Australia:Canberra|Mexico:Mexico City|Norway:Oslo|"
    "Sweden:Stockholm|Finland:Helsinki|Poland:Warsaw|Greece:Athens|Turkey:Ankara|Peru:Lima|"
    "Chile:Santiago|Ghana:Accra|Nigeria:Abuja|Thailand:Bangkok|Vietnam:Hanoi|Ireland:Dublin|"
    "Austria:Vienna|Hungary:Budapest|Morocco:Rabat|Colombia:Bogota").split("|"))
DEFINITIONS = dict(pair.split(":") for pair in (
    "photosynthesis:the process by which plants turn light, water and carbon dioxide into sugar|"
    "gravity:the force that pulls objects with mass towards each other|"
    "evaporation:the change of a liquid into a gas below its boiling point|"
    "democracy:a system of government in which citizens choose their leaders by voting|"
    "metaphor:a figure of speech that describes one thing as if it were another|"
    "prime number:a whole number greater than one whose only divisors are one and itself|"
    "ecosystem:a community of living things together with their physical environment|"
    "inflation:a general rise in prices that reduces what money can buy|"
    "molecule:a group of atoms bonded together|"
    "algorithm:a finite sequence of steps for solving a problem|"
    "erosion:the wearing away of land by wind, water or ice|"
    "synonym:a word with the same or nearly the same meaning as another|"
    "mammal:a warm-blooded animal that feeds its young with milk|"
    "perimeter:the total length of the boundary of a shape").split("|"))
NAMES = "Ana|Ben|Chloe|Dev|Ema|Farid|Gia|Hugo|Ines|Jon|Kofi|Lena".split("|")
OPS: dict[str, tuple[str, Callable[[int, int], int]]] = {
    "+": ("plus", lambda a, b: a + b), "-": ("minus", lambda a, b: a - b),
    "*": ("times", lambda a, b: a * b)}
UNITS = [("hours", "minutes", 60), ("minutes", "seconds", 60), ("weeks", "days", 7),
         ("kilograms", "grams", 1000), ("metres", "centimetres", 100)]


def arithmetic(rng: random.Random) -> tuple[str, int]:
    """A two-operand sum, difference or small product, phrased one of three ways."""
    symbol = rng.choice(sorted(OPS))
    word, fn = OPS[symbol]
    if symbol == "*":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
    else:
        a, b = rng.randint(10, 99), rng.randint(1, 60)
    question = rng.choice([f"What is {a} {symbol} {b}?", f"Compute {a} {word} {b}.",
                           f"Calculate {a} {symbol} {b}."])
    return question, fn(a, b)


def ordering(rng: random.Random) -> tuple[str, str]:
    """A three-person transitive comparison; returns the question and who is at the top."""
    a, b, c = rng.sample(NAMES, 3)
    adjective, superlative = rng.choice([("older", "oldest"), ("taller", "tallest"),
                                         ("faster", "fastest")])
    return f"{a} is {adjective} than {b}. {b} is {adjective} than {c}. Who is the {superlative}?", a


def capital_record(rng: random.Random) -> Record:
    country = rng.choice(sorted(CAPITALS))
    capital = CAPITALS[country]
    question = rng.choice([f"What is the capital of {country}?",
                           f"Name the capital city of {country}.",
                           f"Which city is the capital of {country}?",
                           f"{capital} is the capital of which country?"])
    return {"question": question, "answer": f"The capital of {country} is {capital}."}


def definition_record(rng: random.Random) -> Record:
    term = rng.choice(sorted(DEFINITIONS))
    question = rng.choice([f"Define {term}.", f"What does '{term}' mean?",
                           f"Explain the term '{term}'."])
    return {"question": question, "answer": f"{term[0].upper() + term[1:]} is {DEFINITIONS[term]}."}


def general_record(rng: random.Random) -> Record:
    """One curated instruction of a randomly chosen kind."""
    kind = rng.choice(["arithmetic", "capital", "definition", "ordering", "units", "parity"])
    if kind == "arithmetic":
        question, value = arithmetic(rng)
        return {"question": question, "answer": str(value)}
    if kind == "capital":
        return capital_record(rng)
    if kind == "definition":
        return definition_record(rng)
    if kind == "ordering":
        question, top = ordering(rng)
        return {"question": question, "answer": f"{top}, because the comparison is transitive."}
    if kind == "units":
        big, small, factor = rng.choice(UNITS)
        n = rng.randint(2, 30)
        return {"question": f"How many {small} are there in {n} {big}?",
                "answer": f"{n * factor} {small}."}
    n = rng.randint(3, 999)
    return {"question": f"Is {n} even or odd?", "answer": "even" if n % 2 == 0 else "odd"}


def multiple_choice(rng: random.Random, question: str, correct: str,
                    wrong: Iterable[str]) -> Record:
    """Place `correct` at a random index among three distinct wrong choices."""
    choices = rng.sample(sorted(set(wrong) - {correct}), 3)
    answer = rng.randrange(4)
    choices.insert(answer, correct)
    return {"question": question, "choices": choices, "answer": answer}


def mmlu_record(rng: random.Random) -> Record:
    """One four-way multiple-choice question of a randomly chosen kind."""
    kind = rng.choice(["arithmetic", "capital", "definition", "ordering"])
    if kind == "arithmetic":
        question, value = arithmetic(rng)
        wrong = {str(value + d) for d in (-10, -2, -1, 1, 2, 10)}
        return multiple_choice(rng, question, str(value), wrong)
    if kind == "capital":
        country = rng.choice(sorted(CAPITALS))
        return multiple_choice(rng, f"What is the capital of {country}?", CAPITALS[country],
                               CAPITALS.values())
    if kind == "definition":
        term = rng.choice(sorted(DEFINITIONS))
        return multiple_choice(rng, f"Which term means: {DEFINITIONS[term]}?", term, DEFINITIONS)
    question, top = ordering(rng)
    return multiple_choice(rng, question, top, NAMES)


def unique_records(rng: random.Random, n: int, make: Callable[[random.Random], Record],
                   key: str) -> list[Record]:
    """`n` records from `make` whose `key` field never repeats."""
    records: dict[object, Record] = {}
    while len(records) < n:
        record = make(rng)
        records.setdefault(record[key], record)
    return list(records.values())


# ---- multilingual text ------------------------------------------------------------------

PARTS = ("subject", "verb", "object", "place")
LANGUAGES: dict[str, dict[str, list[str]]] = {
    language: dict(zip(PARTS, (words.split("|") for words in parts)))
    for language, parts in {
        "en": ("The teacher|My sister|A farmer|The old man|Our neighbour|The child|A doctor|"
               "The baker", "reads|buys|finds|carries|cooks|brings|paints|cleans",
               "a book|the bread|some apples|a letter|the soup|a small boat|the red chair|"
               "fresh fish",
               "at home|in the market|this morning|after school|near the river|in the evening"),
        "de": ("Der Lehrer|Meine Schwester|Ein Bauer|Der alte Mann|Unser Nachbar|Das Kind",
               "liest|kauft|findet|trägt|kocht|bringt",
               "ein Buch|das Brot|einen Apfel|einen Brief|die Suppe|frischen Fisch",
               "zu Hause|auf dem Markt|heute Morgen|nach der Schule|am Abend"),
        "fr": ("Le professeur|Ma sœur|Un fermier|Le vieil homme|Notre voisin|L'enfant",
               "lit|achète|trouve|porte|prépare|apporte",
               "un livre|le pain|une pomme|une lettre|la soupe|du poisson frais",
               "à la maison|au marché|ce matin|après l'école|le soir"),
        "sw": ("Mwalimu|Dada yangu|Mkulima|Mzee|Jirani yetu|Mtoto",
               "anasoma|ananunua|anapata|anabeba|anapika|analeta",
               "kitabu|mkate|tunda|barua|chakula|samaki",
               "nyumbani|sokoni|asubuhi|baada ya shule|jioni"),
    }.items()
}
LANGUAGE_SIZES = {"en": 4000, "de": 1200, "fr": 800, "sw": 150}


def sentence(rng: random.Random, vocab: dict[str, list[str]]) -> str:
    return " ".join(rng.choice(vocab[part]) for part in PARTS) + "."


def text_record(rng: random.Random, language: str) -> Record:
    """One to three sentences in `language`."""
    vocab = LANGUAGES[language]
    return {"text": " ".join(sentence(rng, vocab) for _ in range(rng.randint(1, 3)))}


# ---- writing ----------------------------------------------------------------------------


def write_jsonl(path: Path, records: list[Record]) -> None:
    """Write one JSON object per line through a temp file, so no reader sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    print(f"{path}: {len(records)} records")


def rng_for(name: str) -> random.Random:
    """An independent generator per dataset, so changing one file never reshuffles another."""
    return random.Random(f"{SEED}:{name}")


def write_all(out: Path) -> None:
    rng = rng_for("customer")
    train = customer_pairs(rng, 1500, exclude=set())
    test = customer_pairs(rng, 200, exclude={text for text, _ in train})
    write_jsonl(out / "customer/train.jsonl", [chat_record(t, c) for t, c in train])
    write_jsonl(out / "customer/test.jsonl", [{"text": t, "category": c} for t, c in test])
    general = unique_records(rng_for("general"), 3000, general_record, "question")
    write_jsonl(out / "general/train.jsonl", general)
    mmlu = unique_records(rng_for("mmlu"), 200, mmlu_record, "question")
    write_jsonl(out / "mmlu/test.jsonl", mmlu)
    for language, size in LANGUAGE_SIZES.items():
        lang_rng = rng_for(f"multilingual:{language}")
        records = [text_record(lang_rng, language) for _ in range(size)]
        write_jsonl(out / f"multilingual/{language}.jsonl", records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "data",
                        help="output folder (default: examples/data next to this script)")
    write_all(parser.parse_args().out)


if __name__ == "__main__":
    main()
