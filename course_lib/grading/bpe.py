"""Graders of notebook 02 (02-tokenization): byte-level BPE.

Runs in the referee; the answer key is ``course_lib.bpe``. ``train_bpe`` is not compared with
the reference merge by merge: any tie-break is right, so the learner's merges are replayed on
the text and each must be a most frequent pair at its step.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from course_lib import bpe as ref
from course_lib.grading._harness import (
    IntListOut,
    Kind,
    Mistake,
    PairCountsOut,
    Session,
    StrOut,
    short,
    verify,
)

_EN = (
    "the cat sat on the mat. the cat ate the rat, and the rat sat on the hat of the cat. then the "
    "rat and the cat ran at the man on the mat; that man sat as the cat ran."
)
_UNI = "café crème, naïve façade — über die Straße; 東京と日本 🙂 café, crème, 🙂!"
_WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "mat",
    "rat",
    "token",
    "pair",
    "merge",
    "byte",
    "and",
    "a",
    "an",
    "café",
    "naïve",
    "über",
    "straße",
    "日本",
    "東京",
    "🙂",
    "—",
    "tokenizer",
    "tokens",
    "ate",
]


def _random_text(s: Session, n_words: int) -> str:
    r = s.rng
    words = [r.choice(_WORDS) for _ in range(n_words)]
    return "".join(w + r.choice([" ", " ", " ", ", ", ". "]) for w in words).strip()


def _text_ids(text: str) -> list[int]:
    return list(text.encode("utf-8"))


# ------------------------------------------------------------------------------------------------
# get_pair_counts
# ------------------------------------------------------------------------------------------------


def _non_overlapping(ids: list[int]) -> dict:
    counts: Counter = Counter()
    i = 0
    while i < len(ids) - 1:
        pair = (ids[i], ids[i + 1])
        counts[pair] += 1
        i += 2 if ids[i] == ids[i + 1] else 1
    return dict(counts)


def grade_get_pair_counts(s: Session) -> None:
    s.inplace_hint = "Read ids only (no ids.pop(), no sorting)."
    mistakes = [
        Mistake(
            "count every adjacent position, overlapping ones too: in [5, 5, 5] the pair (5, 5) "
            "occurs twice (loop over zip(ids, ids[1:]))",
            _non_overlapping,
        ),
        Mistake(
            "count each pair as often as it occurs: counts[pair] = counts.get(pair, 0) + 1",
            lambda ids: {p: 1 for p in zip(ids, ids[1:])},
        ),
        Mistake(
            "you missed the last pair: a list of n ids has n - 1 adjacent pairs, zip(ids, ids[1:])",
            lambda ids: dict(Counter(zip(ids[:-1], ids[1:-1]))),
        ),
        Mistake(
            "there is no pair from the last id back to the first: only zip(ids, ids[1:])",
            lambda ids: dict(Counter(zip(ids, ids[1:] + ids[:1]))),
        ),
        Mistake(
            "a pair is (ids[i], ids[i + 1]), in that order",
            lambda ids: dict(Counter(zip(ids[1:], ids))),
        ),
    ]
    r = s.rng
    cases = [[1, 2, 1, 2, 3], [1, 2, 3, 1, 2], [5, 5, 5, 5]] if not s.hidden else []
    cases += [
        [r.choice([7, 7, 8, 9]) for _ in range(r.randint(20, 40))],
        _text_ids(_random_text(s, 12)),
        [r.randrange(300)],
        [],
    ]
    for ids in cases:
        out = s.call(ids)

        def total(counts: dict, n: int = len(ids)) -> str | None:
            if sum(counts.values()) != max(n - 1, 0):
                return (
                    f"your counts add up to {sum(counts.values())}, but {n} ids have "
                    f"{max(n - 1, 0)} adjacent pairs: count every pair of zip(ids, ids[1:])"
                )
            return None

        verify(
            s, out, PairCountsOut(), ref.get_pair_counts(ids), mistakes=mistakes, properties=[total]
        )


# ------------------------------------------------------------------------------------------------
# merge_pair
# ------------------------------------------------------------------------------------------------


def _merge(
    ids: list[int],
    pair: tuple[int, int],
    new_id: int,
    *,
    step_after: int = 2,
    keep_last: bool = True,
    first_only: bool = False,
) -> list[int]:
    """merge_pair with switches for the classic mistakes (defaults: right)."""
    out, i, done = [], 0, False
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair) and not done:
            out.append(new_id)
            i += step_after
            done = first_only
        elif i + 1 < len(ids) or keep_last:
            out.append(ids[i])
            i += 1
        else:
            i += 1
    return out


def _merge_right_to_left(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    return _merge(ids[::-1], (pair[1], pair[0]), new_id)[::-1]


def _overlapping(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace at every position where the pair starts, even inside the last replacement."""
    out = []
    for i, x in enumerate(ids):
        if i + 1 < len(ids) and (x, ids[i + 1]) == tuple(pair):
            out.append(new_id)
        elif not (i > 0 and (ids[i - 1], x) == tuple(pair)):
            out.append(x)
    return out


def _merge_mistakes() -> list[Mistake]:
    overlap = (
        "overlapping merges: after replacing the pair at i, continue at i + 2 (in [1, 1, 1] only "
        "the first two 1s merge: [256, 1])"
    )
    return [
        Mistake(overlap, lambda ids, pair, new: _merge(ids, pair, new, step_after=1)),
        Mistake(overlap, _overlapping),
        Mistake(
            "you dropped the last id: when i reaches the last position there is no pair left, but "
            "ids[i] must still be appended",
            lambda ids, pair, new: _merge(ids, pair, new, keep_last=False),
        ),
        Mistake("scan left to right: in [1, 1, 1] the FIRST two 1s merge", _merge_right_to_left),
        Mistake(
            "replace every occurrence of the pair, not only the first",
            lambda ids, pair, new: _merge(ids, pair, new, first_only=True),
        ),
        Mistake(
            "match ids[i] == pair[0] and ids[i + 1] == pair[1], in that order",
            lambda ids, pair, new: _merge(ids, (pair[1], pair[0]), new),
        ),
    ]


def grade_merge_pair(s: Session) -> None:
    s.inplace_hint = (
        "Build and return a new list; do not change ids (no ids.pop(), ids[i] = ..., del ids[i])."
    )
    r = s.rng
    text_ids = _text_ids(_random_text(s, 15))
    common = max(ref.get_pair_counts(text_ids).items(), key=lambda kv: kv[1])[0]
    cases: list[tuple[list[int], tuple[int, int], int]] = []
    if not s.hidden:
        cases += [([1, 2, 3, 1, 2], (1, 2), 256), ([1, 1, 1], (1, 1), 256)]
    a, b = r.randrange(1, 50), r.randrange(50, 100)
    odd = r.choice([3, 5])  # an odd run: only a left-to-right, non-overlapping scan gets it right
    cases += [
        ([a] * odd + [b] + [a] * r.randint(2, 4), (a, a), 300 + r.randrange(50)),
        ([b, a, b], (a, b), 256 + r.randrange(10)),  # the pair sits at the very end
        ([a, b, a], (b, b), 257),  # absent: a copy of ids
        (text_ids, common, 256),
        ([], (a, b), 256),
    ]
    for ids, pair, new_id in cases:
        out = s.call(ids, pair, new_id)
        verify(
            s,
            out,
            IntListOut(what="merged ids"),
            ref.merge_pair(ids, pair, new_id),
            mistakes=_merge_mistakes(),
        )


# ------------------------------------------------------------------------------------------------
# train_bpe
# ------------------------------------------------------------------------------------------------


class _MergesOut(Kind):
    """A list of (int, int) pairs (lists of two ints are fine)."""

    def check_type(self, value: Any) -> str | None:
        if not isinstance(value, list):
            return f"your merges are {short(value)}; return a list of (int, int) pairs"
        for i, m in enumerate(value):
            if not (isinstance(m, (tuple, list)) and len(m) == 2):
                return f"merges[{i}] is {short(m)}; each merge is a pair of ids like (97, 97)"
            if any(isinstance(x, bool) or not isinstance(x, int) for x in m):
                return (
                    f"merges[{i}] is {short(m)}; a merge is a pair of Python ints (ids), e.g. "
                    "(97, 97), not bytes or tensors"
                )
        return None

    def normalize(self, value: Any) -> list[tuple[int, int]]:
        return [tuple(m) for m in value]

    def same(self, a: Any, b: Any) -> bool:
        return a == b

    def mismatch(self, a: Any, b: Any) -> str:
        return f"your merges are {short(a)}, expected {short(b)}"


def _replay(
    ids: list[int],
    merges: list[tuple[int, int]],
    *,
    new_ids: Callable[[int], int] = lambda i: 256 + i,
    merge: Callable = ref.merge_pair,
) -> str | None:
    """Check that each merge is a most frequent pair at its step; the first problem, or None."""
    start = set(ids)  # code points above 255 exist from the start when ids are not bytes
    for i, pair in enumerate(merges):
        counts = ref.get_pair_counts(ids)
        known = new_ids(i)
        missing = [x for x in pair if not (0 <= x < known or x in start)]
        if missing:
            bad = missing[0]
            return (
                f"merge {i} is {pair}, but id {bad} does not exist yet at step {i} (merge i "
                f"creates id 256 + i, so only ids below {known} exist)"
            )
        if pair not in counts:
            return f"merge {i} is {pair}, but that pair does not occur in the text at step {i}" + (
                " (recount the pairs after every merge: merging removes pairs)" if i else ""
            )
        best = max(counts.values())
        if counts[pair] < best:
            top = max(counts, key=counts.__getitem__)
            return (
                f"merge {i} is {pair}, which occurs {counts[pair]} times at step {i}, but {top} "
                f"occurs {best} times: pick a most frequent pair, max(counts, key=counts.get), "
                "and recount the pairs after every merge"
            )
        ids = merge(ids, pair, known)
    return None


def _diagnose_training(text: str, merges: list[tuple[int, int]]) -> str | None:
    """Name the classic mistake under which the learner's merges would all be right."""
    if any(ord(c) > 255 for c in text) and _replay([ord(c) for c in text], merges) is None:
        return (
            "you trained on character code points (ord(c)); byte-level BPE starts from the UTF-8 "
            "bytes: list(text.encode('utf-8'))"
        )
    for shift in (-1, 1):
        if (
            merges
            and _replay(_text_ids(text), merges, new_ids=lambda i, d=shift: 256 + i + d) is None
        ):
            return f"merge i must create id 256 + i; yours creates {256 + shift} + i"
    if (
        _replay(_text_ids(text), merges, merge=lambda ids, p, n: _merge(ids, p, n, step_after=1))
        is None
    ):
        return (
            "your merges fit a text merged with overlapping replacements: after replacing the "
            "pair at i, continue at i + 2"
        )
    return None


def grade_train_bpe(s: Session) -> None:
    s.error_hints = [
        (
            "bytes must be in range",
            "A merged id can be above 255: keep ids as Python ints in a list, not in bytes.",
        )
    ]
    cases: list[tuple[str, int]] = []
    if not s.hidden:
        cases += [("aaabdaaabac", 259), (_EN, 256 + 15), (_UNI, 256 + 10)]
    cases += [(_random_text(s, 40), 256 + s.rng.randint(8, 20)), (_random_text(s, 10), 256)]
    if s.hidden:
        cases.append((_UNI + " " + _random_text(s, 8), 256 + s.rng.randint(5, 12)))
    for text, vocab_size in cases:
        out = s.call(text, vocab_size)
        merges = verify(s, out, _MergesOut())
        n = len(ref.train_bpe(text, vocab_size))
        problem = _replay(_text_ids(text), merges)
        if len(merges) != n:
            s.fail(
                (problem and _diagnose_training(text, merges))
                or f"you returned {len(merges)} merges; vocab_size - 256 = {vocab_size - 256} "
                "merges are needed (for new_id in range(256, vocab_size))",
                out,
            )
        s.ok()
        if problem:
            s.fail(_diagnose_training(text, merges) or problem, out)
        s.ok()


# ------------------------------------------------------------------------------------------------
# encode
# ------------------------------------------------------------------------------------------------


def _apply(
    ids: list[int],
    merges: list,
    *,
    order: Any = None,
    new_ids: Callable[[int], int] = lambda i: 256 + i,
    merge: Callable = ref.merge_pair,
) -> list[int]:
    for i in order if order is not None else range(len(merges)):
        ids = merge(ids, tuple(merges[i]), new_ids(i))
    return ids


def _encode_mistakes() -> list[Mistake]:
    return [
        Mistake(
            "apply the merges in training order, merge 0 first",
            lambda t, m: _apply(_text_ids(t), m, order=range(len(m) - 1, -1, -1)),
        ),
        Mistake(
            "merge i creates id 256 + i",
            lambda t, m: _apply(_text_ids(t), m, new_ids=lambda i: 255 + i),
        ),
        Mistake(
            "merge i creates id 256 + i",
            lambda t, m: _apply(_text_ids(t), m, new_ids=lambda i: 257 + i),
        ),
        Mistake(
            "merge i creates id 256 + i", lambda t, m: _apply(_text_ids(t), m, new_ids=lambda i: i)
        ),
        Mistake(
            "encode the text to UTF-8 bytes first: list(text.encode('utf-8')), not ord(c) per "
            "character",
            lambda t, m: _apply([ord(c) for c in t], m),
        ),
        Mistake(
            "replace every occurrence of each merge, not only the first",
            lambda t, m: _apply(
                _text_ids(t), m, merge=lambda ids, p, n: _merge(ids, p, n, first_only=True)
            ),
        ),
        Mistake(
            "overlapping merges: after replacing a pair at i, continue at i + 2",
            lambda t, m: _apply(
                _text_ids(t), m, merge=lambda ids, p, n: _merge(ids, p, n, step_after=1)
            ),
        ),
        Mistake(
            "you returned the raw bytes: apply every merge, in training order",
            lambda t, m: _text_ids(t),
        ),
    ]


def grade_encode(s: Session) -> None:
    s.inplace_hint = "Read merges only; do not change it."
    cases: list[tuple[str, list]] = []
    if not s.hidden:
        cases.append(("aaabdaaabac", [(97, 97), (256, 97), (257, 98)]))
    train = _EN if not s.hidden else _random_text(s, 40)
    merges = ref.train_bpe(train, 256 + 25)
    uni_merges = ref.train_bpe(_UNI, 256 + 12)
    cases += [
        (train, merges),
        (_random_text(s, 15), merges),
        (_UNI, uni_merges),
        ("tokens: " + _random_text(s, 6), uni_merges),
        ("", merges),
        ("a", merges),
        (_random_text(s, 5), []),
    ]
    for text, m in cases:
        out = s.call(text, m)
        verify(s, out, IntListOut(what="ids"), ref.encode(text, m), mistakes=_encode_mistakes())


# ------------------------------------------------------------------------------------------------
# decode
# ------------------------------------------------------------------------------------------------


def _vocab(merges: list, *, swap: bool = False) -> list[bytes]:
    table = [bytes([i]) for i in range(256)]
    for a, b in merges:
        table.append(table[b] + table[a] if swap else table[a] + table[b])
    return table


def _decode_mistakes() -> list[Mistake]:
    def joined(ids: list[int], m: list, swap: bool = False) -> bytes:
        table = _vocab(m, swap=swap)
        return b"".join(table[i] for i in ids)

    def chr_based(ids: list[int], m: list) -> str:
        table = ["".join(chr(b) for b in token) for token in _vocab(m)]
        return "".join(table[i] for i in ids)

    return [
        Mistake(
            "decode all the bytes at once, not token by token: one character's UTF-8 bytes can be "
            "split across tokens (b''.join(...).decode('utf-8', errors='replace'))",
            lambda ids, m: "".join(_vocab(m)[i].decode("utf-8", errors="replace") for i in ids),
        ),
        Mistake(
            "build byte strings with bytes([i]) and decode the joined bytes with UTF-8: chr(i) "
            "(like Latin-1) turns every byte into a character of its own",
            chr_based,
        ),
        Mistake(
            "the bytes of merge (a, b) are vocab[a] + vocab[b], in that order",
            lambda ids, m: joined(ids, m, swap=True).decode("utf-8", errors="replace"),
        ),
        Mistake(
            "use errors='replace' (an invalid byte becomes U+FFFD), not errors='ignore'",
            lambda ids, m: joined(ids, m).decode("utf-8", errors="ignore"),
        ),
    ]


def grade_decode(s: Session) -> None:
    s.inplace_hint = "Read ids and merges only; do not change them."
    s.error_hints = [
        (
            "UnicodeDecodeError",
            "Decode with .decode('utf-8', errors='replace'): a sequence of ids can cut a "
            "character in half, and those bytes must become U+FFFD instead of raising.",
        ),
        (
            "bytes must be in range",
            "A merged id can contain other merged ids: build the vocabulary in training order, "
            "vocab[256 + i] = vocab[a] + vocab[b].",
        ),
        (
            "KeyError",
            "Build a vocabulary entry for every merged id: vocab[256 + i] = vocab[a] + vocab[b].",
        ),
    ]
    uni_merges = ref.train_bpe(_UNI, 256 + 15)
    en_merges = ref.train_bpe(_EN if not s.hidden else _random_text(s, 30), 256 + 20)
    split_char = [(97, 0xC3)]  # "a" glued to the first byte of "é" (0xC3 0xA9)
    cases: list[tuple[list[int], list]] = []
    if not s.hidden:
        cases.append(([258, 100, 258, 97, 99], [(97, 97), (256, 97), (257, 98)]))
    text = _random_text(s, 12)
    cases += [
        (ref.encode(_UNI, uni_merges), uni_merges),
        (ref.encode(text, en_merges), en_merges),
        ([256, 0xA9, 256, 0xA9], split_char),  # "aéaé": a character split across two tokens
        ([0xE2, 0x82], en_merges),  # a truncated "€": invalid UTF-8 becomes U+FFFD
        ([], en_merges),
    ]
    for ids, m in cases:
        out = s.call(ids, m)
        verify(s, out, StrOut(), ref.decode(ids, m), mistakes=_decode_mistakes())
