"""Small labelled evaluation sets shipped with the course, and the scores used on them (notebook 08).

The sets live in ``course_lib/assets/evalsets/`` as JSON lines. They were written by the course
authors for this course (not copied from any benchmark) and are MIT-licensed like the rest of
the repository; ``assets/evalsets/README.md`` describes each one.

- ``sentiment``: ``{"text", "label"}`` with label ``"positive"`` or ``"negative"``.
- ``qa``: ``{"question", "answers"}``, every accepted short answer listed.
- ``translation_en_fr``: ``{"en", "fr"}``, one reference translation each.
"""

from __future__ import annotations

import json
import re
import string
import unicodedata
from collections import Counter
from pathlib import Path

EVALSET_DIR = Path(__file__).parent / "assets" / "evalsets"

__all__ = ["EVALSET_DIR", "chrf", "exact_match", "load_evalset", "normalize_answer"]


def load_evalset(name: str) -> list[dict]:
    """The items of one shipped set, in file order.

    Args:
        name: ``"sentiment"``, ``"qa"`` or ``"translation_en_fr"``.

    Returns:
        A list of dicts, one per line of ``assets/evalsets/<name>.jsonl``.
    """
    path = EVALSET_DIR / f"{name}.jsonl"
    if not path.is_file():
        known = sorted(p.stem for p in EVALSET_DIR.glob("*.jsonl"))
        raise ValueError(f"no evaluation set named {name!r}; the course ships {known}")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def normalize_answer(text: str) -> str:
    """Lower case, punctuation and the articles a/an/the removed, spaces collapsed.

    Example:
        >>> normalize_answer("The Nile.")
        'nile'
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if ch in string.punctuation else ch for ch in text)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: list[str]) -> bool:
    """Whether the normalised prediction equals one of the normalised accepted answers."""
    guess = normalize_answer(prediction)
    return any(guess == normalize_answer(a) for a in answers)


def _char_ngrams(text: str, n: int) -> Counter:
    return Counter(text[i : i + n] for i in range(len(text) - n + 1))


def chrf(hypothesis: str, reference: str, max_n: int = 6, beta: float = 2.0) -> float:
    """Character n-gram F-score (chrF, Popović 2015), from 0 (nothing shared) to 100 (identical).

    Spaces are removed; for each n = 1..max_n, precision is the share of the hypothesis's
    character n-grams found in the reference (counts clipped) and recall the share of the
    reference's found in the hypothesis. Precision and recall are averaged over the orders
    that the reference has, then combined as ``(1 + beta^2) P R / (beta^2 P + R)``
    (beta = 2 weighs recall twice as much as precision).

    Example:
        >>> round(chrf("le chat", "le chat"), 1)
        100.0
    """
    if beta <= 0 or max_n < 1:
        raise ValueError(f"need beta > 0 and max_n >= 1, got beta={beta}, max_n={max_n}")
    hyp, ref = "".join(hypothesis.split()), "".join(reference.split())
    precisions, recalls = [], []
    for n in range(1, max_n + 1):
        h, r = _char_ngrams(hyp, n), _char_ngrams(ref, n)
        if not r:
            break
        common = sum((h & r).values())
        precisions.append(common / sum(h.values()) if h else 0.0)
        recalls.append(common / sum(r.values()))
    if not recalls:
        return 0.0
    p, r = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    if p == 0.0 and r == 0.0:
        return 0.0
    return 100.0 * (1 + beta**2) * p * r / (beta**2 * p + r)
