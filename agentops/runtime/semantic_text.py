"""The text side of the semantic cache: what is compared, the offline embedder and the look-alike guard rails.

* ``question_of(messages)``: the last user message's text (None when the last message is not the user's or
  carries anything but text: such a call is never answered by meaning).
* ``partition_key(request, embedder)``: a hash of everything but that last user message (the agent, the
  operation and model, the earlier messages — the system prompt among them —, tools, tool_choice,
  response_format and every other upstream field, max_tokens, the temperature's class, the embedder). Only
  entries of the same partition are ever compared.
* ``offline_embedding(text)``: the default embedder, pure Python + numpy, no model download: hashed word
  unigrams (stop words down-weighted, light suffix stemming), content-word bigrams and character trigrams,
  signed feature hashing into ``OFFLINE_DIM`` floats, L2-normalised. It is lexical: it catches rewordings
  (case, punctuation, contractions, filler words, word order, inflections), not synonyms — a route that
  wants those names an embeddings model.
* ``signature(text)`` / ``same_facts(a, b)``: cheap normalised checks that vectors alone get wrong — the
  numbers, the negations, the quoted strings and the capitalised entities must agree, so "refund order 1234"
  never answers "refund order 1235", "do" never answers "do not", "Paris" never answers "Berlin".

Pure Python: no Django.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import unicodedata
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from agentops.runtime.cache import canonical_json

OFFLINE_DIM = 512
OFFLINE_EMBEDDER = "offline-v1"

# The words, split from one string (a list literal would take a hundred lines).
_STOP = """a an the is are was were be been am do does did can could would should will shall may might must
i me my we our you your it its this that these those there here of in on at to for from by with about as into over
and or but so if then than please kindly tell show give let just also what which who whom how when where why some
any"""
STOP_WORDS = frozenset(_STOP.split())
# Every spelling of a negation, mapped to one word: "don't" and "do not" agree, "do" and "do not" do not.
NEGATIONS = {
    "not": "not",
    "no": "no",
    "never": "never",
    "none": "no",
    "nothing": "no",
    "nobody": "no",
    "neither": "no",
    "nor": "no",
    "without": "without",
    "cannot": "not",
}
# Capitalised at a sentence's start only because it starts the sentence: not an entity.
_STARTS = """explain describe list write summarize summarise compare find refund cancel create delete update send
check get make help translate hi hello hey thanks thank okay ok yes"""
COMMON_STARTS = STOP_WORDS | frozenset(_STARTS.split())
_CONTRACTIONS = (
    (re.compile(r"n['’]t\b"), " not"),
    (re.compile(r"['’]s\b"), " is"),
    (re.compile(r"['’]re\b"), " are"),
    (re.compile(r"['’]ll\b"), " will"),
    (re.compile(r"['’]ve\b"), " have"),
    (re.compile(r"['’]d\b"), " would"),
    (re.compile(r"['’]m\b"), " am"),
)
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_QUOTED = re.compile(r"\"([^\"]+)\"|“([^”]+)”|«([^»]+)»|`([^`]+)`|(?<!\w)'([^']+)'(?!\w)")
_CAPITALISED = re.compile(r"(?<![\w'’])([A-Z][\w'’-]*)")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|\n\s*)[\"“(\[]*$")


def question_of(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """The last message's text when it is the user's and text only; else None."""
    if not messages:
        return None
    last = messages[-1]
    if not isinstance(last, Mapping) or last.get("role") != "user":
        return None
    content = last.get("content")
    if isinstance(content, str):
        return content if content.strip() else None
    if isinstance(content, list) and content:
        parts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") not in ("text", "input_text"):
                return None  # an image, a file, audio: its meaning is not in the text
            parts.append(str(part.get("text") or ""))
        text = "\n".join(parts)
        return text if text.strip() else None
    return None


def temperature_class(temperature: float | None) -> str:
    """Deterministic, low or high sampling: a cached answer is reused only for a request of the same class."""
    if temperature is None:
        return "default"
    if temperature == 0:
        return "zero"
    return "low" if temperature <= 0.7 else "high"


def partition_key(
    *,
    scope: Any,
    operation: str,
    model: str,
    route: Sequence[str],
    messages: Sequence[Mapping[str, Any]],
    max_tokens: int | None,
    temperature: float | None,
    extra: Mapping[str, Any],
    embedder: str,
) -> str:
    """The hash of everything that must be equal for a cached answer to be reused (see the module)."""
    parts = {
        "scope": scope,
        "operation": operation,
        "model": model,
        "route": list(route),
        "context": list(messages[:-1]),
        "max_tokens": max_tokens,
        "temperature": temperature_class(temperature),
        "extra": dict(extra),
        "embedder": embedder,
    }
    return hashlib.sha256(canonical_json(parts).encode("utf-8")).hexdigest()[:32]


# --- offline embedder ------------------------------------------------------------------------------


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    for pattern, replacement in _CONTRACTIONS:
        text = pattern.sub(replacement, text)
    return text


def _stem(word: str) -> str:
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 4 and word.endswith("ed"):
        return word[:-2]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def features(text: str) -> dict[str, float]:
    """Weighted features of ``text``: words (stop words at 0.25), content-word bigrams, character trigrams."""
    words = [_stem(word) for word in _WORD.findall(normalise(text))]
    weights: dict[str, float] = {}
    content = []
    for word in words:
        # Numbers weigh little here: the guard rails compare them exactly (a vector would only blur them).
        stop = (word in STOP_WORDS and word not in NEGATIONS) or any(ch.isdigit() for ch in word)
        weights["w:" + word] = weights.get("w:" + word, 0.0) + (0.25 if stop else 1.0)
        if not stop:
            content.append(word)
            padded = f"<{word}>"
            grams = [padded[i : i + 3] for i in range(len(padded) - 2)]
            share = 0.6 / max(1, len(grams)) ** 0.5
            for gram in grams:
                weights["c:" + gram] = weights.get("c:" + gram, 0.0) + share
    for first, second in itertools.pairwise(content):
        key = f"b:{first} {second}"
        weights[key] = weights.get(key, 0.0) + 0.5
    return weights


def hashed_vector(weights: Mapping[str, float], dim: int, salt: bytes = b"") -> np.ndarray:
    """Signed feature hashing (crc32: stable across processes, unlike ``hash``), L2-normalised, float32."""
    vector = np.zeros(dim, dtype=np.float32)
    for name, weight in weights.items():
        code = zlib.crc32(salt + name.encode("utf-8"))
        vector[code % dim] += weight if code & 0x80000000 else -weight
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else vector


def offline_embedding(text: str) -> np.ndarray:
    return hashed_vector(features(text), OFFLINE_DIM)


# --- guard rails against look-alikes ---------------------------------------------------------------


def signature(text: str) -> dict[str, list[str]]:
    """What must agree besides the meaning: numbers, negations, quoted strings, capitalised entities, and the
    words (lower case) that the other side's entities are looked up in. JSON-ready (sorted lists)."""
    text = unicodedata.normalize("NFKC", text)
    numbers = {re.sub(r"(?<=\d),(?=\d{3}\b)", "", n).rstrip(".,") for n in _NUMBER.findall(text)}
    lowered = normalise(text)
    words = _WORD.findall(lowered)
    negations = {NEGATIONS[word] for word in words if word in NEGATIONS}
    quoted = {" ".join(next(g for g in match if g).lower().split()) for match in _QUOTED.findall(text)}
    entities = set()
    for match in _CAPITALISED.finditer(text):
        word = match.group(1).rstrip("'’-")
        lower = normalise(word).split()[0] if normalise(word).split() else word.lower()
        if lower == "i":
            continue
        if _SENTENCE_START.search(text[: match.start()]) and lower in COMMON_STARTS:
            continue
        entities.add(lower)
    return {
        "numbers": sorted(numbers),
        "negations": sorted(negations),
        "quoted": sorted(quoted),
        "entities": sorted(entities),
        "words": sorted(set(words)),
    }


def same_facts(a: Mapping[str, Sequence[str]], b: Mapping[str, Sequence[str]]) -> bool:
    """True when two questions' numbers, negations and quoted strings are the same and each one's entities
    appear (as words, any case) in the other ("Refund order 12" and "please refund order 12" agree)."""
    for part in ("numbers", "negations", "quoted"):
        if set(a.get(part) or ()) != set(b.get(part) or ()):
            return False
    words_a, words_b = set(a.get("words") or ()), set(b.get("words") or ())
    return set(a.get("entities") or ()) <= words_b and set(b.get("entities") or ()) <= words_a
