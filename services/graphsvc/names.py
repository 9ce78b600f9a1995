"""Docker-style random container names (``adjective_surname``).

A short list is enough: collisions are retried by the GraphDB and, after a
few tries, a random digit suffix is added as Docker does.
"""

from __future__ import annotations

import secrets

ADJECTIVES = [
    "admiring", "adoring", "agitated", "amazing", "angry", "awesome", "blissful", "bold", "boring",
    "brave", "busy", "charming", "clever", "compassionate", "competent", "condescending", "confident",
    "cool", "cranky", "crazy", "dazzling", "determined", "distracted", "dreamy", "eager", "ecstatic",
    "elastic", "elated", "elegant", "eloquent", "epic", "exciting", "fervent", "festive", "flamboyant",
    "focused", "friendly", "frosty", "funny", "gallant", "gifted", "goofy", "gracious", "great",
    "happy", "hardcore", "heuristic", "hopeful", "hungry", "infallible", "inspiring", "intelligent",
    "interesting", "jolly", "jovial", "keen", "kind", "laughing", "loving", "lucid", "magical",
    "modest", "musing", "mystifying", "naughty", "nervous", "nice", "nifty", "nostalgic", "objective",
    "optimistic", "peaceful", "pedantic", "pensive", "practical", "priceless", "quirky", "quizzical",
    "recursing", "relaxed", "reverent", "romantic", "sad", "serene", "sharp", "silly", "sleepy",
    "stoic", "strange", "stupefied", "suspicious", "sweet", "tender", "thirsty", "trusting",
    "unruffled", "upbeat", "vibrant", "vigilant", "vigorous", "wizardly", "wonderful", "xenodochial",
    "youthful", "zealous", "zen",
]  # fmt: skip

SURNAMES = [
    "albattani", "allen", "almeida", "archimedes", "ardinghelli", "aryabhata", "babbage", "banach",
    "bardeen", "bartik", "bassi", "bell", "benz", "bhabha", "black", "blackwell", "bohr", "booth",
    "borg", "bose", "boyd", "brahmagupta", "brattain", "brown", "carson", "cerf", "chandrasekhar",
    "clarke", "cohen", "curie", "darwin", "davinci", "dijkstra", "dubinsky", "easley", "edison",
    "einstein", "elion", "engelbart", "euclid", "euler", "fermat", "fermi", "feynman", "franklin",
    "galileo", "gates", "goldberg", "goldstine", "golick", "goodall", "hamilton", "hawking",
    "heisenberg", "hermann", "hertz", "hodgkin", "hoover", "hopper", "hugle", "hypatia", "jackson",
    "jang", "jennings", "jepsen", "johnson", "joliot", "jones", "kalam", "kapitsa", "kare", "keller",
    "kepler", "khorana", "kilby", "kirch", "knuth", "kowalevski", "lalande", "lamarr", "lamport",
    "leakey", "leavitt", "lewin", "lichterman", "liskov", "lovelace", "lumiere", "mahavira",
    "mayer", "mccarthy", "mcclintock", "mclean", "mcnulty", "meitner", "mendel", "mirzakhani",
    "montalcini", "moore", "morse", "murdock", "napier", "nash", "neumann", "newton", "nightingale",
    "nobel", "noether", "northcutt", "noyce", "panini", "pare", "pasteur", "payne", "perlman", "pike",
    "poincare", "poitras", "ptolemy", "raman", "ramanujan", "ride", "ritchie", "roentgen", "rosalind",
    "saha", "sammet", "shamir", "shannon", "shaw", "shirley", "shockley", "sinoussi", "snyder",
    "spence", "stallman", "stonebraker", "swanson", "swartz", "swirles", "tesla", "thompson",
    "torvalds", "turing", "varahamihira", "visvesvaraya", "volhard", "wescoff", "williams", "wilson",
    "wing", "wozniak", "wright", "yalow", "yonath",
]  # fmt: skip


def random_name(retry: int = 0) -> str:
    """``adjective_surname``; from the second retry on, with a digit suffix (as Docker)."""
    name = f"{secrets.choice(ADJECTIVES)}_{secrets.choice(SURNAMES)}"
    if retry > 0:
        name += str(secrets.randbelow(10))
    return name
