"""Learner-style byte-level BPE functions (notebook 02): right and wrong."""

from __future__ import annotations

from collections import Counter, defaultdict

from grading_impl import bug, right

# ------------------------------------------------------------------------------------------------
# get_pair_counts
# ------------------------------------------------------------------------------------------------


def get_pair_counts(ids):
    counts = {}
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def get_pair_counts_counter(ids):
    return Counter(zip(ids, ids[1:]))


def get_pair_counts_defaultdict(ids):
    counts = defaultdict(int)
    for i in range(len(ids) - 1):
        counts[ids[i], ids[i + 1]] += 1
    return counts


@bug("get_pair_counts", "overlapping ones too")
def get_pair_counts_skips_overlaps(ids):
    counts, i = {}, 0
    while i < len(ids) - 1:
        pair = (ids[i], ids[i + 1])
        counts[pair] = counts.get(pair, 0) + 1
        i += 2 if ids[i] == ids[i + 1] else 1
    return counts


@bug("get_pair_counts", "count each pair as often as it occurs")
def get_pair_counts_presence(ids):
    return {pair: 1 for pair in zip(ids, ids[1:])}


@bug("get_pair_counts", "you missed the last pair")
def get_pair_counts_off_by_one(ids):
    counts = {}
    for i in range(len(ids) - 2):
        pair = (ids[i], ids[i + 1])
        counts[pair] = counts.get(pair, 0) + 1
    return counts


@bug("get_pair_counts", "(ids[i], ids[i + 1]), in that order")
def get_pair_counts_reversed(ids):
    return dict(Counter(zip(ids[1:], ids)))


@bug("get_pair_counts", "return a dict")
def get_pair_counts_list(ids):
    return list(Counter(zip(ids, ids[1:])).items())


# ------------------------------------------------------------------------------------------------
# merge_pair
# ------------------------------------------------------------------------------------------------


def merge_pair(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i < len(ids) - 1 and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_pair_skip_flag(ids, pair, new_id):
    out, skip = [], False
    for a, b in zip(ids, ids[1:] + [None]):
        if skip:
            skip = False
        elif (a, b) == tuple(pair):
            out.append(new_id)
            skip = True
        else:
            out.append(a)
    return out


@bug("merge_pair", "overlapping merges")
def merge_pair_overlapping(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i < len(ids) - 1 and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 1  # should skip both
        else:
            out.append(ids[i])
            i += 1
    return out


@bug("merge_pair", "you dropped the last id")
def merge_pair_drops_last(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


@bug("merge_pair", "not only the first")
def merge_pair_first_only(ids, pair, new_id):
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == pair:
            return ids[:i] + [new_id] + ids[i + 2 :]
    return list(ids)


@bug("merge_pair", "changed its input `ids` in place")
def merge_pair_in_place(ids, pair, new_id):
    i = 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            ids[i : i + 2] = [new_id]
        i += 1
    return ids


@bug("merge_pair", "scan left to right")
def merge_pair_right_to_left(ids, pair, new_id):
    out, i = [], len(ids) - 1
    while i >= 0:
        if i > 0 and (ids[i - 1], ids[i]) == pair:
            out.append(new_id)
            i -= 2
        else:
            out.append(ids[i])
            i -= 1
    return out[::-1]


# ------------------------------------------------------------------------------------------------
# train_bpe
# ------------------------------------------------------------------------------------------------


def train_bpe(text, vocab_size):
    ids, merges = list(text.encode("utf-8")), []
    for new_id in range(256, vocab_size):
        counts = get_pair_counts(ids)
        if not counts:
            break
        pair = max(counts, key=counts.get)
        ids = merge_pair(ids, pair, new_id)
        merges.append(pair)
    return merges


def train_bpe_greatest_pair_wins_ties(text, vocab_size):
    ids, merges = list(text.encode("utf-8")), []
    for new_id in range(256, vocab_size):
        counts = Counter(zip(ids, ids[1:]))
        pair = max(counts, key=lambda p: (counts[p], p))
        ids = merge_pair(ids, pair, new_id)
        merges.append(pair)
    return merges


def train_bpe_smallest_pair_wins_ties(text, vocab_size):
    ids, merges = list(text.encode("utf-8")), []
    for i in range(vocab_size - 256):
        counts = Counter(zip(ids, ids[1:]))
        pair = min(counts, key=lambda p: (-counts[p], p))
        ids = merge_pair(ids, pair, 256 + i)
        merges.append(list(pair))  # lists of two ints are fine too
    return merges


@bug("train_bpe", "recount the pairs after every merge")
def train_bpe_counts_once(text, vocab_size):
    ids, merges = list(text.encode("utf-8")), []
    counts = get_pair_counts(ids)
    for new_id in range(256, vocab_size):
        pair = max(counts, key=counts.get)
        del counts[pair]
        ids = merge_pair(ids, pair, new_id)
        merges.append(pair)
    return merges


@bug("train_bpe", "merges are needed")
def train_bpe_one_merge_short(text, vocab_size):
    return train_bpe(text, vocab_size - 1) if vocab_size > 256 else []


@bug("train_bpe", "character code points")
def train_bpe_code_points(text, vocab_size):
    ids, merges = [ord(c) for c in text], []
    for new_id in range(256, vocab_size):
        counts = get_pair_counts(ids)
        pair = max(counts, key=counts.get)
        ids = merge_pair(ids, pair, new_id)
        merges.append(pair)
    return merges


@bug("train_bpe", "yours creates 257 + i")
def train_bpe_ids_off_by_one(text, vocab_size):
    ids, merges = list(text.encode("utf-8")), []
    for i in range(vocab_size - 256):
        counts = get_pair_counts(ids)
        pair = max(counts, key=counts.get)
        ids = merge_pair(ids, pair, 257 + i)
        merges.append(pair)
    return merges


@bug("train_bpe", "pick a most frequent pair")
def train_bpe_least_frequent(text, vocab_size):
    ids, merges = list(text.encode("utf-8")), []
    for new_id in range(256, vocab_size):
        counts = get_pair_counts(ids)
        pair = min(counts, key=counts.get)
        ids = merge_pair(ids, pair, new_id)
        merges.append(pair)
    return merges


@bug("train_bpe", "overlapping replacements")
def train_bpe_overlapping_merges(text, vocab_size):
    ids, merges = list(text.encode("utf-8")), []
    for new_id in range(256, vocab_size):
        counts = get_pair_counts(ids)
        pair = max(counts, key=counts.get)
        ids = merge_pair_overlapping.fn(ids, pair, new_id)
        merges.append(pair)
    return merges


# ------------------------------------------------------------------------------------------------
# encode
# ------------------------------------------------------------------------------------------------


def encode(text, merges):
    ids = list(text.encode("utf-8"))
    for i, pair in enumerate(merges):
        ids = merge_pair(ids, pair, 256 + i)
    return ids


def encode_lowest_rank_first(text, merges):
    ranks = {tuple(pair): i for i, pair in enumerate(merges)}
    ids = list(text.encode("utf-8"))
    while len(ids) >= 2:
        pair = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, float("inf")))
        if pair not in ranks:
            break
        ids = merge_pair(ids, pair, 256 + ranks[pair])
    return ids


@bug("encode", "in training order")
def encode_reversed(text, merges):
    ids = list(text.encode("utf-8"))
    for i in reversed(range(len(merges))):
        ids = merge_pair(ids, merges[i], 256 + i)
    return ids


@bug("encode", "merge i creates id 256 + i")
def encode_ids_from_255(text, merges):
    ids = list(text.encode("utf-8"))
    for i, pair in enumerate(merges):
        ids = merge_pair(ids, pair, 255 + i)
    return ids


@bug("encode", "UTF-8 bytes first")
def encode_code_points(text, merges):
    ids = [ord(c) for c in text]
    for i, pair in enumerate(merges):
        ids = merge_pair(ids, pair, 256 + i)
    return ids


@bug("encode", "you returned the raw bytes")
def encode_forgets_merges(text, merges):
    return list(text.encode("utf-8"))


@bug("encode", "not only the first")
def encode_first_occurrence(text, merges):
    ids = list(text.encode("utf-8"))
    for i, pair in enumerate(merges):
        ids = merge_pair_first_only.fn(ids, tuple(pair), 256 + i)
    return ids


# ------------------------------------------------------------------------------------------------
# decode
# ------------------------------------------------------------------------------------------------


def _vocab(merges):
    vocab = {i: bytes([i]) for i in range(256)}
    for i, (a, b) in enumerate(merges):
        vocab[256 + i] = vocab[a] + vocab[b]
    return vocab


def decode(ids, merges):
    vocab = _vocab(merges)
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")


def decode_recursive(ids, merges):
    def expand(i):
        if i < 256:
            return [i]
        a, b = merges[i - 256]
        return expand(a) + expand(b)

    return bytes(b for i in ids for b in expand(i)).decode("utf-8", errors="replace")


@bug("decode", "not token by token")
def decode_per_token(ids, merges):
    vocab = _vocab(merges)
    return "".join(vocab[i].decode("utf-8", errors="replace") for i in ids)


@bug("decode", "errors='replace'")
def decode_strict(ids, merges):
    vocab = _vocab(merges)
    return b"".join(vocab[i] for i in ids).decode("utf-8")


@bug("decode", "vocab[a] + vocab[b], in that order")
def decode_swapped_merge(ids, merges):
    vocab = {i: bytes([i]) for i in range(256)}
    for i, (a, b) in enumerate(merges):
        vocab[256 + i] = vocab[b] + vocab[a]
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")


@bug("decode", "decode the joined bytes with UTF-8")
def decode_chr(ids, merges):
    vocab = {i: chr(i) for i in range(256)}
    for i, (a, b) in enumerate(merges):
        vocab[256 + i] = vocab[a] + vocab[b]
    return "".join(vocab[i] for i in ids)


@bug("decode", "(like Latin-1)")
def decode_latin1(ids, merges):
    vocab = _vocab(merges)
    return b"".join(vocab[i] for i in ids).decode("latin-1")


@bug("decode", "decode them to a str")
def decode_returns_bytes(ids, merges):
    vocab = _vocab(merges)
    return b"".join(vocab[i] for i in ids)


IMPLS = [
    right("get_pair_counts", get_pair_counts, "reference"),
    right("get_pair_counts", get_pair_counts_counter),
    right("get_pair_counts", get_pair_counts_defaultdict),
    get_pair_counts_skips_overlaps,
    get_pair_counts_presence,
    get_pair_counts_off_by_one,
    get_pair_counts_reversed,
    get_pair_counts_list,
    right("merge_pair", merge_pair, "reference"),
    right("merge_pair", merge_pair_skip_flag),
    merge_pair_overlapping,
    merge_pair_drops_last,
    merge_pair_first_only,
    merge_pair_in_place,
    merge_pair_right_to_left,
    right("train_bpe", train_bpe, "reference"),
    right("train_bpe", train_bpe_greatest_pair_wins_ties),
    right("train_bpe", train_bpe_smallest_pair_wins_ties),
    train_bpe_counts_once,
    train_bpe_one_merge_short,
    train_bpe_code_points,
    train_bpe_ids_off_by_one,
    train_bpe_least_frequent,
    train_bpe_overlapping_merges,
    right("encode", encode, "reference"),
    right("encode", encode_lowest_rank_first),
    encode_reversed,
    encode_ids_from_255,
    encode_code_points,
    encode_forgets_merges,
    encode_first_occurrence,
    right("decode", decode, "reference"),
    right("decode", decode_recursive),
    decode_per_token,
    decode_strict,
    decode_swapped_merge,
    decode_chr,
    decode_latin1,
    decode_returns_bytes,
]
