import numpy as np
import pytest

from avitalk.errors import AvitalkError
from avitalk.vocab import EMOTIONS, load_vocabulary


def test_every_emotion_and_intensity_round_trips():
    v = load_vocabulary()
    acts = [("AU04_brow_lower", 0.9), ("AU06_cheek_raise", 0.5), ("AU20_lip_stretch", 0.3), ("AU01_inner_brow_raise", 0.12)]
    for e in EMOTIONS:
        for i in (1, 2, 3):
            for k in range(5):
                text = v.write(e, i, acts, "female", np.random.default_rng(k))
                got = v.parse(text)
                assert (got["emotion"], got["intensity"]) == (e, i), text
                assert {a for a, _ in got["actions"]} == {a for a, _ in acts}, text
                assert text[0].isupper() and text.endswith(".")


def test_degree_words_follow_strength_and_grammar():
    v = load_vocabulary()
    assert v.degree_word(0.1) == "slightly" and v.degree_word(0.95) == "strongly"
    t = v.write("sad", 2, [("AU01_inner_brow_raise", 0.5)])  # canonical wording without rng
    assert t == "A sad person speaks with fairly lifted inner brow."
    assert v.write("angry", 2, [("AU04_brow_lower", 0.7)]).startswith("An angry")
    two = v.write("happy", 2, [("AU12_lip_corner_pull", 0.9), ("AU06_cheek_raise", 0.6)])
    assert ", and" not in two and " and " in two
    assert v.write("neutral", 1, []) == "A calm person speaks."
    with pytest.raises(AvitalkError, match="unknown emotion"):
        v.write("bored", 1, [])


def test_free_text_parses_to_nothing_without_error():
    got = load_vocabulary().parse("Somebody says something in a room.")
    assert got == {"emotion": None, "intensity": None, "actions": []}


def test_broken_vocabulary_file_is_refused(tmp_path):
    import yaml

    from avitalk.vocab import prompts_dir

    d = yaml.safe_load((prompts_dir() / "vocabulary.yaml").read_text())
    d["emotions"]["sad"][1].append("calm")
    (tmp_path / "dup.yaml").write_text(yaml.safe_dump(d))
    with pytest.raises(AvitalkError, match=r"unique.*calm"):
        load_vocabulary(str(tmp_path / "dup.yaml"))
    (tmp_path / "v.yaml").write_text("emotions: {happy: {1: [glad]}}\nactions: {}\ndegrees: []\npersons: {}\ntemplates: []\ntemplates_no_actions: []\n")
    with pytest.raises(AvitalkError, match="need words for intensities"):
        load_vocabulary(str(tmp_path / "v.yaml"))


def test_replace_emotion_keeps_the_rest_and_fixes_the_article():
    v = load_vocabulary()
    t = "An unhappy person speaks with fairly lifted inner brow."
    assert v.replace_emotion(t, "angry") == "An angry person speaks with fairly lifted inner brow."
    assert v.replace_emotion(t, "happy", 3) == "A delighted person speaks with fairly lifted inner brow."
    assert v.parse(v.replace_emotion(t, "fear"))["emotion"] == "fear"
    assert v.replace_emotion("Somebody talks.", "sad") == "Somebody talks."
    with pytest.raises(AvitalkError, match="unknown emotion"):
        v.replace_emotion(t, "bored")


def test_articles_agree_with_the_next_word():
    from avitalk.vocab import fix_articles

    assert fix_articles("An disappointed person speaks.") == "A disappointed person speaks."
    assert fix_articles("A person speaks in a angry way, an calm one and a elated one.") == \
        "A person speaks in an angry way, a calm one and an elated one."
    assert fix_articles("an honest face, a unique one") == "an honest face, a unique one"
    assert fix_articles("Anout person") == "Anout person"  # not an article
    assert fix_articles("A unimpressed man, an unit") == "An unimpressed man, a unit"  # the un- prefix is a vowel
