"""Byte-level byte-pair encoding (BPE), the tokenizer of GPT-2 and of most LLMs since.

BPE starts from the 256 possible bytes and repeatedly fuses the most frequent adjacent pair of
tokens into a new token. Every string is a sequence of UTF-8 bytes, so nothing is ever
"unknown", and frequent words end up as single tokens.

The module has two layers; the second keeps the idea of the first and changes what it must to
be fast and GPT-2 compatible.

1. **Teaching layer** (notebook 02): ids are ints, a merge is a pair of ids, merge ``i`` creates
   id ``256 + i``; the whole text is one sequence and every step recounts every pair.

       get_pair_counts([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
       merge_pair([1, 2, 3, 1, 2], (1, 2), 256) == [256, 3, 256]

2. **Full trainer** (``train_vocab``, ``Tokenizer``, ``to_hf_tokenizer``). What changes:

   - the text is first split on special tokens (never merged across), then into pre-tokens with
     GPT-2's regex (words with their leading space, numbers, punctuation runs, whitespace), and
     merges never cross a pre-token boundary;
   - identical pre-tokens are counted once, with a frequency;
   - a merge is a pair of byte strings, and the vocabulary maps ids to bytes:
     ids 0..255 are the bytes, then the special tokens in the order given, then the merges;
   - ties are broken towards the lexicographically greater pair of byte strings, so training
     is deterministic whatever the dict order;
   - pair counts are updated incrementally after each merge, using an index from each pair to
     the pre-tokens that contain it, instead of being recounted.

   Measured (Python 3.11, one CPU core): a 1,000-token vocabulary on the whole Shakespeare
   corpus (``course_lib.data.shakespeare_text()``, 5.0 MB) trains in 2.2 to 3.2 s, about 0.5 s
   of it pre-tokenizing; ``Tokenizer.encode`` of the corpus then takes about 1.6 s and gives
   2.1 M tokens (2.36 bytes per token).

``to_hf_tokenizer`` wraps a trained vocabulary as a Hugging Face ``PreTrainedTokenizerFast``
that encodes exactly like ``Tokenizer`` (tested), so a model trained with it can ship a standard
tokenizer that ``AutoTokenizer.from_pretrained`` loads.
"""

from __future__ import annotations

import itertools
import numbers
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence

import regex

__all__ = [
    "GPT2_PATTERN",
    "Tokenizer",
    "bytes_to_unicode",
    "decode",
    "encode",
    "get_pair_counts",
    "merge_pair",
    "to_hf_tokenizer",
    "train_bpe",
    "train_vocab",
]

# --------------------------------------------------------------------------------------------
# Layer 1: the teaching functions (notebook 02)
# --------------------------------------------------------------------------------------------


def get_pair_counts(ids: Sequence[int]) -> dict[tuple[int, int], int]:
    """Count every adjacent pair of ids.

    Args:
        ids: a token sequence.

    Returns:
        ``{(a, b): count}`` over the ``len(ids) - 1`` adjacent pairs, in order of first appearance.

    Example:
        >>> get_pair_counts([1, 2, 3, 1, 2])
        {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    """
    counts: dict[tuple[int, int], int] = {}
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge_pair(ids: Sequence[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` by ``new_id``, scanning left to right.

    Occurrences do not overlap: in ``[1, 1, 1]`` the first two 1s merge and the last one
    is left alone.

    Args:
        ids: a token sequence (not modified).
        pair: the two adjacent ids ``(a, b)`` to fuse.
        new_id: the id that replaces them.

    Returns:
        A new list, shorter by the number of replacements.

    Example:
        >>> merge_pair([1, 1, 1, 2], (1, 1), 256)
        [256, 1, 2]
    """
    out = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_bpe(text: str, vocab_size: int) -> list[tuple[int, int]]:
    """Learn ``vocab_size - 256`` byte-level merges from ``text``, one most frequent pair at a time.

    The text is one sequence of UTF-8 bytes; merge ``i`` fuses the most frequent adjacent pair
    into id ``256 + i``. Ties go to the pair seen first in the current sequence. Training stops
    early when the sequence has no pair left (it is a single token).

    Args:
        text: training text.
        vocab_size: final vocabulary size, >= 256 (256 means no merges).

    Returns:
        The merges, in training order: ``merges[i]`` is the pair that became ``256 + i``.

    Example:
        >>> train_bpe("aaabdaaabac", 259)   # aa -> 256, then (256, a) -> 257, then (257, b) -> 258
        [(97, 97), (256, 97), (257, 98)]
    """
    if vocab_size < 256:
        raise ValueError(f"vocab_size must be at least 256 (the bytes), got {vocab_size}")
    ids = list(text.encode("utf-8"))
    merges = []
    for new_id in range(256, vocab_size):
        counts = get_pair_counts(ids)
        if not counts:
            break
        pair = max(counts, key=counts.get)  # the first maximum in dict order: the pair seen first
        ids = merge_pair(ids, pair, new_id)
        merges.append(pair)
    return merges


def encode(text: str, merges: Sequence[tuple[int, int]]) -> list[int]:
    """Encode ``text`` with merges from ``train_bpe``: UTF-8 bytes, then merges in training order.

    Merge ``i`` is applied everywhere before merge ``i + 1``, as in training. (Each merge scans
    the whole text; ``Tokenizer`` instead applies, per pre-token, the earliest merge present.)

    Args:
        text: the string to encode.
        merges: ``train_bpe``'s output; merge ``i`` creates id ``256 + i``.

    Returns:
        Token ids.
    """
    ids = list(text.encode("utf-8"))
    for i, pair in enumerate(merges):
        ids = merge_pair(ids, pair, 256 + i)
    return ids


def decode(ids: Sequence[int], merges: Sequence[tuple[int, int]]) -> str:
    """Turn ids back into text: expand every id into its bytes, then decode UTF-8.

    A sequence of ids can cut a multi-byte character in half; such bytes become U+FFFD
    (``errors="replace"``) instead of raising.

    Args:
        ids: token ids in [0, 256 + len(merges)).
        merges: ``train_bpe``'s output.

    Returns:
        The decoded string.
    """
    token_bytes = [bytes([i]) for i in range(256)]
    for a, b in merges:
        token_bytes.append(token_bytes[a] + token_bytes[b])
    return b"".join(token_bytes[i] for i in ids).decode("utf-8", errors="replace")


# --------------------------------------------------------------------------------------------
# Layer 2: the full byte-level trainer and tokenizer (GPT-2 style)
# --------------------------------------------------------------------------------------------

#: GPT-2's pre-tokenization pattern: contractions, letters, numbers and other symbols (each with
#: an optional leading space), then whitespace (a run before a word leaves its last space to it).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_PRETOKEN_RE = regex.compile(GPT2_PATTERN)
# A pre-token's match depends on at most one character after its end, and a failed
# alternative on at most three characters from its start (e.g. "'ll"); so a pre-token that ends
# at least this many characters before the end of the known text can no longer change.
_LOOKAHEAD = 2


def _is_int(x: object) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _check_vocab_size(vocab_size: object, minimum: int = 256) -> int:
    if not _is_int(vocab_size):
        raise TypeError(f"vocab_size must be an int, got {vocab_size!r}")
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: the 256 bytes"
            + (f" and {minimum - 256} special tokens" if minimum > 256 else "")
            + f" already take {minimum} ids, so use vocab_size >= {minimum}"
        )
    return int(vocab_size)


def _check_specials(special_tokens: object) -> list[str]:
    if special_tokens is None:
        return []
    if isinstance(special_tokens, str):
        raise TypeError(
            f"special_tokens must be a list of str, got the str {special_tokens!r}: use [{special_tokens!r}]"
        )
    specials = list(special_tokens)  # type: ignore[call-overload]
    for s in specials:
        if not isinstance(s, str) or not s:
            raise ValueError(f"special tokens must be non-empty str, got {s!r}")
    if len(set(specials)) != len(specials):
        raise ValueError(f"special_tokens has duplicates: {specials}")
    return specials


def _special_regex(specials: Sequence[str]) -> regex.Pattern | None:
    """Leftmost-longest matcher: at one position the regex tries the longest special first."""
    if not specials:
        return None
    return regex.compile("|".join(regex.escape(s) for s in sorted(specials, key=len, reverse=True)))


def _split_on_specials(
    text: str, special_re: regex.Pattern | None
) -> Iterator[tuple[str, bool, int]]:
    """Yield ``(segment, is_special, end)``; text segments may be empty strings only if skipped."""
    pos = 0
    if special_re is not None:
        for m in special_re.finditer(text):
            if m.start() > pos:
                yield text[pos : m.start()], False, m.start()
            yield m.group(), True, m.end()
            pos = m.end()
    if pos < len(text):
        yield text[pos:], False, len(text)


def _pieces(text: str, special_re: regex.Pattern | None) -> Iterator[tuple[str, bool, int]]:
    """Yield ``(piece, is_special, end)``: special tokens whole, everything else pre-tokenized."""
    for segment, is_special, end in _split_on_specials(text, special_re):
        if is_special:
            yield segment, True, end
        else:
            start = end - len(segment)
            for m in _PRETOKEN_RE.finditer(segment):
                yield m.group(), False, start + m.end()


def train_vocab(
    text: str, vocab_size: int, special_tokens: Sequence[str] = ()
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Train a GPT-2-style byte-level BPE vocabulary.

    Args:
        text: training text.
        vocab_size: final vocabulary size, counting the 256 bytes and the special tokens.
        special_tokens: strings such as ``"<|endoftext|>"`` that get one id each, are cut out of
            the training text first and never take part in a merge.

    Returns:
        ``(vocab, merges)``: ``vocab`` maps id -> bytes, with ids 0..255 the single bytes, then
        the special tokens (UTF-8) in the order given, then one id per merge;
        ``merges[i]`` is the pair of byte strings fused into id ``256 + len(special_tokens) + i``.
        Training stops early when no pair is left.

    Example:
        >>> vocab, merges = train_vocab("low lower lowest", 258)
        >>> merges   # (l, o) and (o, w) tie at 3; (b'o', b'w') is the greater pair
        [(b'o', b'w'), (b'l', b'ow')]
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    specials = _check_specials(special_tokens)
    vocab_size = _check_vocab_size(vocab_size, 256 + len(specials))
    vocab: dict[int, bytes] = {i: bytes([i]) for i in range(256)}
    for s in specials:
        vocab[len(vocab)] = s.encode("utf-8")

    # Distinct pre-tokens with their frequency: the corpus as a bag of "words".
    counts: Counter[str] = Counter()
    for segment, is_special, _ in _split_on_specials(text, _special_regex(specials)):
        if not is_special:
            counts.update(_PRETOKEN_RE.findall(segment))
    words = [list(w.encode("utf-8")) for w in counts]
    freqs = list(counts.values())

    # pair -> weighted count, and pair -> indices of the words that contain it.
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for w, (ids, f) in enumerate(zip(words, freqs)):
        for pair in itertools.pairwise(ids):
            pair_counts[pair] += f
            where[pair].add(w)

    merges: list[tuple[bytes, bytes]] = []
    while len(vocab) < vocab_size and pair_counts:
        best = max(pair_counts.values())
        pair = max(
            (p for p, c in pair_counts.items() if c == best),
            key=lambda p: (vocab[p[0]], vocab[p[1]]),
        )
        new_id = len(vocab)
        vocab[new_id] = vocab[pair[0]] + vocab[pair[1]]
        merges.append((vocab[pair[0]], vocab[pair[1]]))
        # Only the words holding the pair change: take their old pairs out, put their new ones in.
        for w in where.pop(pair):
            old, f = words[w], freqs[w]
            new = words[w] = merge_pair(old, pair, new_id)
            old_pairs, new_pairs = list(itertools.pairwise(old)), list(itertools.pairwise(new))
            for p in old_pairs:
                pair_counts[p] -= f
            for p in new_pairs:
                pair_counts[p] += f
            for p in set(old_pairs).difference(new_pairs):
                if p != pair:
                    where[p].discard(w)
                if pair_counts[p] == 0:
                    del pair_counts[p]
            for p in set(new_pairs).difference(old_pairs):
                where[p].add(w)
        assert pair not in pair_counts, "internal error: the merged pair still has a count"
    return vocab, merges


class Tokenizer:
    """Encode and decode text with a trained byte-level BPE vocabulary.

    Args:
        vocab: id -> bytes, as returned by ``train_vocab`` (any vocabulary that holds the 256
            single bytes and every merge result works).
        merges: pairs of byte strings in training order.
        special_tokens: strings to keep whole. Each gets the id whose bytes equal it (the lowest
            such id), or a new id after the largest one if the vocabulary lacks it. When two
            special tokens overlap at one position, the longest wins.

    Example:
        >>> vocab, merges = train_vocab("low lower lowest", 259, ["<|eot|>"])
        >>> tok = Tokenizer(vocab, merges, ["<|eot|>"])
        >>> tok.encode("lower<|eot|>")
        [258, 101, 114, 256]
    """

    _CACHE_LIMIT = 100_000  # pre-tokens remembered; bounded so streaming stays bounded too

    def __init__(
        self,
        vocab: dict[int, bytes],
        merges: Sequence[tuple[bytes, bytes]],
        special_tokens: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(vocab, dict) or not all(
            _is_int(i) and isinstance(b, bytes) for i, b in vocab.items()
        ):
            raise TypeError(
                "vocab must be a dict {id (int): token (bytes)}, as returned by train_vocab"
            )
        self.vocab: dict[int, bytes] = dict(vocab)
        self.special_tokens = _check_specials(special_tokens)
        self.special_ids: dict[str, int] = {}
        for s in self.special_tokens:
            sb = s.encode("utf-8")
            same = [i for i, b in self.vocab.items() if b == sb]
            self.special_ids[s] = min(same) if same else max(self.vocab, default=-1) + 1
            self.vocab[self.special_ids[s]] = sb
        self._special_re = _special_regex(self.special_tokens)
        self._prefixes = {s[:k] for s in self.special_tokens for k in range(1, len(s))}

        # Ordinary tokens: bytes -> id. When a special token is spelled like an ordinary token,
        # BPE produces the ordinary id (train_vocab gives both; the special one is cut out first).
        special_id_set = set(self.special_ids.values())
        self._id_of: dict[bytes, int] = {}
        for i in sorted(self.vocab):
            b = self.vocab[i]
            if b not in self._id_of or (
                self._id_of[b] in special_id_set and i not in special_id_set
            ):
                self._id_of[b] = i
        missing = [b for b in range(256) if bytes([b]) not in self._id_of]
        if missing:
            raise ValueError(
                f"vocab lacks the single byte {bytes([missing[0]])!r}: a byte-level vocab needs all 256"
            )
        self._byte_ids = [self._id_of[bytes([b])] for b in range(256)]

        self.merges = [tuple(m) for m in merges]
        self._ranks: dict[
            tuple[int, int], tuple[int, int]
        ] = {}  # (id_a, id_b) -> (rank, merged id)
        for rank, m in enumerate(self.merges):
            if len(m) != 2 or not all(isinstance(x, bytes) for x in m):
                raise TypeError(
                    f"merges[{rank}] = {m!r} must be a pair of bytes, as returned by train_vocab"
                )
            a, b = m
            for part in (a, b, a + b):
                if part not in self._id_of:
                    raise ValueError(
                        f"merges[{rank}] = {m!r}: {part!r} is not in vocab; were vocab and merges trained together?"
                    )
            self._ranks.setdefault((self._id_of[a], self._id_of[b]), (rank, self._id_of[a + b]))
        self._cache: dict[str, list[int]] = {}

    def _encode_piece(self, piece: str) -> list[int]:
        """BPE on one pre-token: apply the lowest-ranked merge present until none applies."""
        ids = self._cache.get(piece)
        if ids is not None:
            return ids
        ids = [self._byte_ids[b] for b in piece.encode("utf-8")]
        ranks = self._ranks
        while len(ids) >= 2:
            pair = min(itertools.pairwise(ids), key=lambda p: ranks.get(p, (len(ranks),))[0])
            if pair not in ranks:
                break
            ids = merge_pair(ids, pair, ranks[pair][1])
        if len(self._cache) >= self._CACHE_LIMIT:
            self._cache.clear()
        self._cache[piece] = ids
        return ids

    def _ids(self, piece: str, is_special: bool) -> list[int]:
        return [self.special_ids[piece]] if is_special else self._encode_piece(piece)

    def encode(self, text: str) -> list[int]:
        """Encode a string: special tokens first, then GPT-2 pre-tokens, then BPE within each.

        Args:
            text: the string to encode.

        Returns:
            Token ids.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}: decode bytes first")
        out: list[int] = []
        for piece, is_special, _ in _pieces(text, self._special_re):
            out.extend(self._ids(piece, is_special))
        return out

    def encode_iterable(self, iterable: Iterable[str]) -> Iterator[int]:
        """Encode a stream of strings (e.g. an open file, line by line) lazily.

        Gives the same ids as ``encode("".join(iterable))`` without building that string: it keeps
        only the text whose tokens may still change, i.e. the last pre-tokens (a following
        chunk could extend them) and a possible beginning of a special token. Memory is bounded
        by the chunk size plus the longest pre-token.

        Args:
            iterable: strings, split anywhere (even inside a word or a special token).

        Yields:
            Token ids, in order.
        """
        if isinstance(iterable, str):
            raise TypeError(
                "encode_iterable takes an iterable of str (e.g. a file object); for one str use encode"
            )
        buf = ""
        for chunk in iterable:
            if not isinstance(chunk, str):
                raise TypeError(f"encode_iterable needs str chunks, got {type(chunk).__name__}")
            buf += chunk
            # From `hold` on, the buffer may be the start of a special token: nothing there is final.
            hold = len(buf)
            for p in range(max(0, len(buf) - max(map(len, self._prefixes), default=0)), len(buf)):
                if buf[p:] in self._prefixes:
                    hold = p
                    break
            cut = 0
            for piece, is_special, end in _pieces(buf, self._special_re):
                if end > (hold if is_special else hold - _LOOKAHEAD):
                    break
                yield from self._ids(piece, is_special)
                cut = end
            buf = buf[cut:]
        if buf:
            yield from self.encode(buf)

    def decode(self, ids: Iterable[int]) -> str:
        """Concatenate the tokens' bytes and decode UTF-8 (invalid bytes become U+FFFD).

        Args:
            ids: token ids from this vocabulary (a list, or a 1-D tensor).

        Returns:
            The decoded string.
        """
        try:
            parts = [self.vocab[int(i)] for i in ids]
        except KeyError as err:
            raise ValueError(f"id {err.args[0]} is not in this tokenizer's vocabulary") from None
        except TypeError:
            raise TypeError("ids must be an iterable of ints") from None
        return b"".join(parts).decode("utf-8", errors="replace")

    def __len__(self) -> int:
        return len(self.vocab)


# --------------------------------------------------------------------------------------------
# Export to Hugging Face
# --------------------------------------------------------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 bytes to printable characters.

    Byte-level tokenizers store tokens as strings; bytes that are printable Latin-1 characters
    stand for themselves, the others (control characters, space, ...) are shifted to code
    points from 256 on. The space byte becomes ``"Ġ"``, newline ``"Ċ"``.

    Returns:
        ``{byte: one-character str}`` for all 256 bytes.
    """
    keep = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    kept = set(keep)
    table, shifted = {}, 0
    for b in range(256):
        if b in kept:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


def to_hf_tokenizer(
    vocab: dict[int, bytes],
    merges: Sequence[tuple[bytes, bytes]],
    special_tokens: Sequence[str] = (),
):
    """Wrap a trained vocabulary as a Hugging Face fast tokenizer that encodes like ``Tokenizer``.

    Built with the ``tokenizers`` library: a BPE model over GPT-2's byte-to-character mapping,
    the ByteLevel pre-tokenizer (GPT-2 regex, no added prefix space) and decoder, and the special
    tokens added as special tokens. ``"<|endoftext|>"``, if among them, becomes the
    ``eos_token`` and ``bos_token`` (as in GPT-2). Save it with ``save_pretrained(folder)`` and
    load it with ``AutoTokenizer.from_pretrained(folder)``.

    Args:
        vocab: id -> bytes from ``train_vocab``; ids must be 0..len(vocab) - 1.
        merges: pairs of byte strings in training order.
        special_tokens: the special token strings (those of ``train_vocab``).

    Returns:
        A ``transformers.PreTrainedTokenizerFast``.
    """
    from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors
    from tokenizers import Tokenizer as HFTokenizer
    from transformers import PreTrainedTokenizerFast

    ours = Tokenizer(vocab, merges, special_tokens)  # validates and resolves the special ids
    if sorted(ours.vocab) != list(range(len(ours.vocab))):
        raise ValueError(
            "to_hf_tokenizer needs ids 0..len(vocab)-1 without gaps, as train_vocab makes"
        )
    to_chars = bytes_to_unicode()

    def as_str(token: bytes) -> str:
        return "".join(to_chars[b] for b in token)

    special_ids = set(ours.special_ids.values())
    hf_vocab: dict[str, int] = {}
    for i, token in ours.vocab.items():
        if i not in special_ids or len(token) == 1:
            hf_vocab.setdefault(as_str(token), i)
    for s, i in ours.special_ids.items():
        if hf_vocab.setdefault(s, i) != i:
            raise ValueError(
                f"special token {s!r} is spelled like the ordinary token {hf_vocab[s]}; "
                "Hugging Face cannot tell them apart: pick a special token that the text never forms"
            )
    hf_merges = [(as_str(a), as_str(b)) for a, b in ours.merges]

    backend = HFTokenizer(models.BPE(vocab=hf_vocab, merges=hf_merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.add_special_tokens(
        [AddedToken(s, special=True, normalized=False) for s in ours.special_tokens]
    )

    extra = {}
    if "<|endoftext|>" in ours.special_ids:
        extra = {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, clean_up_tokenization_spaces=False, **extra
    )
