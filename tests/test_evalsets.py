"""course_lib.evalsets: the shipped evaluation sets load, are well-formed, and the scores are right."""

from __future__ import annotations

import pytest

from course_lib.evalsets import chrf, exact_match, load_evalset, normalize_answer


def test_sets_are_well_formed_and_large_enough():
    sentiment = load_evalset("sentiment")
    assert len(sentiment) >= 40
    assert {item["label"] for item in sentiment} == {"positive", "negative"}
    assert len({item["text"] for item in sentiment}) == len(sentiment)  # no duplicates
    qa = load_evalset("qa")
    assert len(qa) >= 40
    assert all(item["question"].endswith("?") and item["answers"] for item in qa)
    assert len({item["question"] for item in qa}) == len(qa)
    translation = load_evalset("translation_en_fr")
    assert len(translation) >= 5 and all(item["en"] and item["fr"] for item in translation)


def test_unknown_set_names_the_known_ones():
    with pytest.raises(ValueError, match="'qa'"):
        load_evalset("squad")


def test_exact_match_normalises():
    assert normalize_answer("  The Pacific   Ocean! ") == "pacific ocean"
    assert exact_match("the Nile.", ["Nile"])
    assert exact_match("Paris", ["Paris"]) and not exact_match("Paris, France", ["Paris"])
    assert not exact_match("", ["Paris"])


def test_chrf_hand_computed():
    assert chrf("le chat", "le chat") == pytest.approx(100.0)
    assert chrf("xyz", "abc") == 0.0
    assert chrf("", "abc") == 0.0
    # "ab" vs "abc" (max_n=2): P1 = 2/2, R1 = 2/3; P2 = 1/1, R2 = 1/2 -> P = 1, R = 7/12
    p, r = 1.0, 7 / 12
    assert chrf("ab", "abc", max_n=2) == pytest.approx(100 * 5 * p * r / (4 * p + r))
    # spaces do not count, and recall weighs more than precision
    assert chrf("a b c", "abc") == pytest.approx(100.0)
    assert chrf("abcabc", "abc") > chrf("a", "abc")


def test_chrf_rejects_bad_parameters():
    with pytest.raises(ValueError, match="beta"):
        chrf("a", "a", beta=0)
