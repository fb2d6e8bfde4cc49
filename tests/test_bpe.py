"""course_lib.bpe: the teaching BPE of notebook 02, the full trainer, the Tokenizer and the HF export."""

import io
import itertools
import random
import time
from collections import Counter

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from course_lib import bpe
from course_lib.bpe import (
    GPT2_PATTERN,
    Tokenizer,
    decode,
    encode,
    get_pair_counts,
    merge_pair,
    to_hf_tokenizer,
    train_bpe,
    train_vocab,
)

SAMPLE = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
    "We'll go, they're here; I've 1604 ducats -- naïve café, Straße, 日本語, 🙂🙂!\n\t  x\r\n"
) * 3

# Text that exercises every branch of the GPT-2 pattern and the special-token matcher.
TRICKY = st.lists(
    st.sampled_from(
        list("abls'tdvre 0123\n\t\r.,!<|>é日🙂") + ["<|end|>", "<|end|><|end|>", "'ll", "  "]
    ),
    max_size=30,
).map("".join)
SPECIALS = ["<|end|>", "<|end|><|end|>", "<|endoftext|>"]


@pytest.fixture(scope="module")
def sample_tok():
    vocab, merges = train_vocab(SAMPLE, 330, SPECIALS)
    return vocab, merges, Tokenizer(vocab, merges, SPECIALS)


@pytest.fixture(scope="module")
def tricky_tok():
    """A vocabulary with merges for the TRICKY fragments, so that a wrong split shows in the ids."""
    rng = random.Random(0)
    parts = [
        "'ll",
        "'s",
        " 'll",
        "ll",
        "  ",
        "\n\n",
        " \n",
        " 01",
        "23",
        "able",
        " tsd",
        "!.",
        "<|",
        "|>",
        "é日",
        "🙂",
    ]
    text = "".join(rng.choice(parts) for _ in range(3000))
    vocab, merges = train_vocab(text, 400, SPECIALS)
    return Tokenizer(vocab, merges, SPECIALS)


# --------------------------------------------------------------------------- teaching layer


def test_get_pair_counts_hand_computed():
    assert get_pair_counts([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert get_pair_counts([7]) == {} and get_pair_counts([]) == {}
    assert get_pair_counts([5, 5, 5]) == {(5, 5): 2}  # counting overlaps is right for pairs


@pytest.mark.parametrize(
    "ids, expected",
    [
        ([1, 1, 1], [256, 1]),
        ([1, 1, 1, 1], [256, 256]),
        ([2, 1, 1, 1, 2, 1, 1], [2, 256, 1, 2, 256]),
        ([1, 2, 1], [1, 2, 1]),
        ([], []),
    ],
)
def test_merge_pair_left_to_right_non_overlapping(ids, expected):
    original = list(ids)
    assert merge_pair(ids, (1, 1), 256) == expected
    assert ids == original  # input untouched


def test_merge_pair_order_matters():
    assert merge_pair([1, 2, 1, 2], (2, 1), 300) == [1, 300, 2]


def test_train_bpe_hand_computed():
    # aaabdaaabac: aa (4 times, seen first) -> 256; text is now [256 a b d 256 a b a c]
    # (256, a) -> 257 (2 times, seen first); then (257, b) -> 258.
    merges = train_bpe("aaabdaaabac", 259)
    assert merges == [(97, 97), (256, 97), (257, 98)]
    assert encode("aaabdaaabac", merges) == [258, 100, 258, 97, 99]
    assert decode([258, 100], merges) == "aaabd"


def test_train_bpe_each_merge_is_a_most_frequent_pair():
    text = SAMPLE[:300]
    merges = train_bpe(text, 300)
    ids = list(text.encode())
    for i, pair in enumerate(merges):
        counts = get_pair_counts(ids)
        assert counts[pair] == max(counts.values())
        ids = merge_pair(ids, pair, 256 + i)


def test_train_bpe_stops_when_no_pair_is_left():
    assert train_bpe("abab", 1000) == [(97, 98), (256, 256)]
    assert train_bpe("", 300) == [] and train_bpe("x", 300) == []
    assert train_bpe("abc", 256) == []


def test_teaching_encode_applies_merges_in_training_order():
    merges = train_bpe(SAMPLE, 330)
    for text in ["Speak, speak.", "aaaa", SAMPLE[50:200], "ünseen 🙂 text"]:
        ids = list(text.encode())
        for i, pair in enumerate(merges):  # the definition, literally
            ids = merge_pair(ids, pair, 256 + i)
        assert encode(text, merges) == ids


def test_teaching_decode_replaces_broken_utf8():
    merges = train_bpe("héllo", 258)
    assert decode([104, 0xC3], merges) == "h\ufffd"


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40))
def test_teaching_round_trip(text):
    merges = _TEACHING_MERGES
    assert decode(encode(text, merges), merges) == text


_TEACHING_MERGES = train_bpe(SAMPLE, 300)


def test_teaching_bad_input():
    # the teaching functions read like the notebook's solutions: train_bpe's one check is the
    # solution's own, and an id without bytes fails in decode's table lookup
    with pytest.raises(ValueError, match="at least 256"):
        train_bpe("abc", 100)
    with pytest.raises(IndexError):
        decode([256], [])


# --------------------------------------------------------------------------- train_vocab


def _naive_train_vocab(text, vocab_size, specials=()):
    """Recount every pair after every merge: slow, obviously right, same tie-break."""
    vocab = {i: bytes([i]) for i in range(256)}
    for s in specials:
        vocab[len(vocab)] = s.encode()
    parts = (
        regex.split("|".join(map(regex.escape, sorted(specials, key=len, reverse=True))), text)
        if specials
        else [text]
    )
    words = Counter(tuple(w.encode()) for p in parts for w in regex.findall(GPT2_PATTERN, p))
    words = {tuple(bytes([b]) for b in w): c for w, c in words.items()}
    merges = []
    while len(vocab) < vocab_size:
        counts = Counter()
        for w, c in words.items():
            for pair in itertools.pairwise(w):
                counts[pair] += c
        if not counts:
            break
        pair = max(counts, key=lambda p: (counts[p], p))
        merges.append(pair)
        vocab[len(vocab)] = pair[0] + pair[1]
        new_words = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == pair:
                    out.append(pair[0] + pair[1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] = new_words.get(tuple(out), 0) + c
        words = new_words
    return vocab, merges


def test_train_vocab_hand_computed():
    # pre-tokens "low", " lower", " lowest": (l, o) and (o, w) tie at 3 and (b"o", b"w") is the
    # greater pair; then (l, ow) at 3; then (" ", low) and (low, e) tie at 2 and (low, e) wins.
    vocab, merges = train_vocab("low lower lowest", 259)
    assert merges == [(b"o", b"w"), (b"l", b"ow"), (b"low", b"e")]
    assert vocab[256] == b"ow" and vocab[257] == b"low" and vocab[258] == b"lowe"
    assert len(vocab) == 259


def test_train_vocab_tie_break_is_greater_byte_pair_not_first_seen():
    # every pair occurs once; a "first seen" rule would merge (a, a) first
    _vocab, merges = train_vocab("aa zz", 259)
    assert merges == [(b"z", b"z"), (b"a", b"a"), (b" ", b"zz")]


def test_train_vocab_merges_never_cross_pretokens():
    # "a b" repeated: the pair (a, " ") is frequent in the raw bytes but crosses a word boundary
    _, merges = train_vocab("a b " * 50, 270)
    assert all(not (a.endswith(b"a") and b.startswith(b" ")) for a, b in merges)
    assert (b" ", b"b") in merges


def test_train_vocab_special_tokens_get_ids_and_are_never_merged_across():
    text = "x<|eot|>x<|eot|>x<|eot|>" * 30 + "hello"
    vocab, merges = train_vocab(text, 270, ["<|eot|>", "<|pad|>"])
    assert vocab[256] == b"<|eot|>" and vocab[257] == b"<|pad|>"
    assert len(vocab) <= 270
    for a, b in merges:
        assert b"<" not in a + b and b"|" not in a + b  # special tokens removed before counting
    assert (b"x", b"x") not in merges  # "x<|eot|>x" must not join the x's


@pytest.mark.parametrize("seed", range(6))
def test_train_vocab_incremental_equals_recount(seed):
    rng = random.Random(seed)
    words = [
        "the",
        " the",
        " then",
        " they",
        "'ll",
        " 42",
        "  ",
        "\n",
        "ab",
        " abab",
        "é",
        "!!",
        "<|s|>",
    ]
    text = "".join(rng.choice(words) for _ in range(300))
    specials = ["<|s|>"] if seed % 2 else []
    assert train_vocab(text, 300, specials) == _naive_train_vocab(text, 300, specials)


def test_train_vocab_bad_input():
    with pytest.raises(ValueError, match="vocab_size >= 256"):
        train_vocab("abc", 255)
    with pytest.raises(ValueError, match="2 special tokens"):
        train_vocab("abc", 257, ["<a>", "<b>"])
    with pytest.raises(ValueError, match="duplicates"):
        train_vocab("abc", 300, ["<a>", "<a>"])
    with pytest.raises(TypeError, match=r"\['<a>'\]"):
        train_vocab("abc", 300, "<a>")
    with pytest.raises(ValueError, match="non-empty"):
        train_vocab("abc", 300, [""])


# --------------------------------------------------------------------------- Tokenizer


def test_tokenizer_hand_computed():
    vocab, merges = train_vocab("low lower lowest", 259, ["<|eot|>"])
    tok = Tokenizer(vocab, merges, ["<|eot|>"])
    assert tok.encode("lower<|eot|>") == [258, 101, 114, 256]
    assert tok.encode(" low") == [32, 258]  # (" ", "low") was not learned with 259 ids
    assert tok.decode([258, 101, 114, 256]) == "lower<|eot|>"


def test_tokenizer_longest_special_wins(sample_tok):
    _, _, tok = sample_tok
    end, endend = tok.special_ids["<|end|>"], tok.special_ids["<|end|><|end|>"]
    assert end != endend
    assert tok.encode("<|end|><|end|><|end|>") == [endend, end]
    assert tok.encode("a<|end|>b")[1] == end
    # the order the specials are listed in does not matter
    vocab, merges = train_vocab(SAMPLE, 330, SPECIALS)
    rev = Tokenizer(vocab, merges, SPECIALS[::-1])
    assert rev.encode("<|end|><|end|><|end|>") == [endend, end]


def test_tokenizer_special_spelled_like_a_learned_token():
    vocab, merges = train_vocab("ab ab ab", 258)  # learns "ab" (256), then " ab" (257)
    tok = Tokenizer(vocab, merges, ["ab"])  # declared special only now: it shares id 256
    assert tok.special_ids["ab"] == 256
    assert tok.encode("ab ab") == [256, 32, 256]  # the special cuts " ab" apart
    assert tok.encode("xab") == [120, 256] and tok.decode([256, 32]) == "ab "


def test_tokenizer_without_specials_splits_them_as_text(sample_tok):
    vocab, merges, _ = sample_tok
    plain = Tokenizer(vocab, merges)
    assert plain.decode(plain.encode("<|end|>")) == "<|end|>"
    assert all(i not in range(256, 259) for i in plain.encode("<|end|> <|endoftext|>"))


def test_tokenizer_adds_unknown_special_token():
    vocab, merges = train_vocab("abab", 258)
    tok = Tokenizer(vocab, merges, ["<new>"])
    assert tok.encode("ab<new>") == [256, 258] and len(tok) == 259
    assert len(vocab) == 258  # the caller's vocab is not modified


def test_tokenizer_merge_matches_teaching_layer_without_pretokens():
    # With one pre-token and no ties, the full tokenizer's merges equal the teaching ones.
    text = "aaaaabbbc"  # aa (4), then bb (2); after that every pair ties
    vocab, merges = train_vocab(text, 258)
    teach = train_bpe(text, 258)
    assert [vocab[256], vocab[257]] == [b"aa", b"bb"] and teach == [(97, 97), (98, 98)]
    assert Tokenizer(vocab, merges).encode(text) == encode(text, teach)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=50))
def test_tokenizer_round_trip_arbitrary_unicode(sample_tok, text):
    _, _, tok = sample_tok
    ids = tok.encode(text)
    assert all(0 <= i < len(tok) for i in ids)
    assert tok.decode(ids) == text


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(TRICKY, st.lists(st.integers(0, 60), max_size=8))
def test_encode_iterable_equals_encode_for_any_chunking(tricky_tok, text, cuts):
    tok = tricky_tok
    cuts = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    chunks = [text[a:b] for a, b in itertools.pairwise(cuts)]
    assert list(tok.encode_iterable(chunks)) == tok.encode(text)
    assert list(tok.encode_iterable(iter(text))) == tok.encode(text)  # one character at a time


def test_encode_iterable_on_a_file_of_shakespeare():
    from course_lib.data import shakespeare_text

    text = shakespeare_text()[:120_000]
    vocab, merges = train_vocab(text, 400, ["<|endoftext|>"])
    tok = Tokenizer(vocab, merges, ["<|endoftext|>"])
    text = text.replace("\n\n", "\n\n<|endoftext|>", 50)
    assert list(tok.encode_iterable(io.StringIO(text))) == tok.encode(text)


def test_encode_iterable_streams_lazily(sample_tok):
    _, _, tok = sample_tok
    pulled = 0

    def lines():
        nonlocal pulled
        for _ in range(100_000):
            pulled += 1
            yield "Speak, speak. We'll go.\n"

    stream = tok.encode_iterable(lines())
    first = [next(stream) for _ in range(50)]
    assert pulled < 20  # ids come out long before the input is exhausted
    assert first == tok.encode("Speak, speak. We'll go.\n" * 20)[:50]


def test_tokenizer_bad_input(sample_tok):
    _vocab, _merges, tok = sample_tok
    with pytest.raises(ValueError, match="not in this tokenizer's vocabulary"):
        tok.decode([10**6])
    with pytest.raises(TypeError, match="str"):
        tok.encode(b"bytes")
    with pytest.raises(TypeError, match="use encode"):
        list(tok.encode_iterable("a str"))
    with pytest.raises(ValueError, match="single byte"):
        Tokenizer({i: bytes([i]) for i in range(255)}, [])
    with pytest.raises(ValueError, match="trained together"):
        Tokenizer({i: bytes([i]) for i in range(256)}, [(b"a", b"b")])
    with pytest.raises(TypeError, match="dict"):
        Tokenizer([bytes([i]) for i in range(256)], [])


# --------------------------------------------------------------------------- Hugging Face export


@pytest.fixture(scope="module")
def shakespeare_pair():
    from course_lib.data import shakespeare_text

    text = shakespeare_text()
    vocab, merges = train_vocab(text[:400_000], 700, ["<|endoftext|>", "<|end|>", "<|end|><|end|>"])
    return text, vocab, merges


def test_bytes_to_unicode_is_gpt2s_map():
    table = bpe.bytes_to_unicode()
    assert len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("A")] == "A"
    assert all(c.isprintable() and not c.isspace() for c in table.values())


@pytest.mark.slow
def test_hf_tokenizer_encodes_like_ours(shakespeare_pair, tmp_path):
    from transformers import AutoTokenizer

    text, vocab, merges = shakespeare_pair
    specials = ["<|endoftext|>", "<|end|>", "<|end|><|end|>"]
    ours = Tokenizer(vocab, merges, specials)
    hf = to_hf_tokenizer(vocab, merges, specials)
    assert len(hf) == len(vocab)
    slice_ = text[2_000_000:2_150_000]  # 150 kB the vocabulary was not trained on
    ids = ours.encode(slice_)
    assert hf.encode(slice_) == ids
    mixed = (
        "Hi<|endoftext|>there <|end|><|end|><|end|> x  \n\n  y's 'LL 123 ünïcödé 日本語 🙂<|end|"
    )
    assert hf.encode(mixed) == ours.encode(mixed)
    assert hf.decode(hf.encode(mixed)) == mixed
    assert hf.convert_ids_to_tokens(ours.encode("<|end|><|end|>")) == ["<|end|><|end|>"]
    assert hf.eos_token == "<|endoftext|>" and hf.eos_token_id == ours.special_ids["<|endoftext|>"]

    hf.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.encode(slice_[:20_000]) == ours.encode(slice_[:20_000])
    assert loaded.encode(mixed) == ours.encode(mixed)
    assert loaded.eos_token_id == hf.eos_token_id
    assert loaded.decode(ids[:500]) == ours.decode(ids[:500])


@pytest.fixture(scope="module")
def sample_hf(sample_tok):
    vocab, merges, _ = sample_tok
    return to_hf_tokenizer(vocab, merges, SPECIALS)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.one_of(TRICKY, st.text(max_size=40)))
def test_hf_tokenizer_equivalence_property(sample_tok, sample_hf, text):
    _, _, tok = sample_tok
    assert sample_hf.encode(text) == tok.encode(text)


def test_hf_tokenizer_equivalence_on_tricky_text(tricky_tok):
    vocab = {i: b for i, b in tricky_tok.vocab.items()}
    hf = to_hf_tokenizer(vocab, tricky_tok.merges, SPECIALS)
    rng = random.Random(1)
    pieces = list("abls'tdvre 0123\n\t\r.,!<|>é日🙂") + ["<|end|>", "<|end|><|end|>", "'ll", "  "]
    for _ in range(300):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(40)))
        assert hf.encode(text) == tricky_tok.encode(text), text


def test_hf_tokenizer_rejects_ambiguous_special():
    vocab, merges = train_vocab("ab ab ab", 258)  # learns "ab"
    with pytest.raises(ValueError, match="spelled like the ordinary token"):
        to_hf_tokenizer({**vocab, 258: b"ab"}, merges, ["ab"])


@pytest.mark.slow
def test_full_corpus_1000_vocab_trains_well_under_a_minute():
    from course_lib.data import shakespeare_text

    text = shakespeare_text()
    # CPU time of this process, not wall time: other jobs on a shared machine do not count. The
    # bound is a guard against an accidentally quadratic merge loop (seconds here, far more
    # then), with a wide margin for slower CPUs.
    start = time.process_time()
    vocab, merges = train_vocab(text, 1000, ["<|endoftext|>"])
    elapsed = time.process_time() - start
    assert len(vocab) == 1000 and len(merges) == 1000 - 257
    assert merges[0] == (b" ", b"t")
    assert elapsed < 60, f"train_vocab took {elapsed:.1f} CPU-seconds"


def test_docstring_examples_run():
    import doctest

    import course_lib.bpe as module

    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
