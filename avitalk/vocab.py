"""The instruction vocabulary in ``prompts/vocabulary.yaml``: emotion words per intensity, facial-action phrases,
degree adverbs and sentence templates. Writes MeadText-style instructions from structured labels, and reads
structured labels back from such text (free text stays valid: what is not recognised is simply not parsed)."""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import AvitalkError

EMOTIONS = ("neutral", "angry", "contempt", "disgusted", "fear", "happy", "sad", "surprised")
INTENSITIES = (1, 2, 3)


def prompts_dir() -> Path:
    """Folder of prompt templates and vocabulary: the installed ``avitalk.prompts`` (the repository's ``prompts/``);
    ``$AVITALK_PROMPTS`` overrides it."""
    env = os.environ.get("AVITALK_PROMPTS")
    if env:
        return Path(env)
    import importlib.util

    spec = importlib.util.find_spec("avitalk.prompts")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("avitalk.prompts is not installed (run `make setup` or `pip install .`)")
    return Path(list(spec.submodule_search_locations)[0])


# "uni" sounds "you-" (unique, unit) except in the un- prefix (unimpressed, uninterested)
_VOWEL_SOUND = re.compile(r"(?!(?:uni(?![mn])|use|usu|one|eu))[aeiou]|hour|honest", re.IGNORECASE)


def first_sentence(text: str) -> str:
    """``text`` with its whitespace collapsed, up to the end of its first sentence."""
    text = " ".join(text.split())
    for end in (". ", "! ", "? "):
        if end in text:
            text = text[: text.index(end) + 1]
    return text


def fix_articles(text: str) -> str:
    """"a" before a vowel sound becomes "an", "an" before a consonant sound becomes "a" (case kept): sampled or edited
    instructions can pair the article of one emotion word with another ("An disappointed person")."""
    def fix(m: re.Match) -> str:
        art, word = m.group(1), m.group(2)
        want_n = bool(_VOWEL_SOUND.match(word))
        new = art[0] + ("n" if want_n else "")
        return new + m.group(0)[len(art):]

    return re.sub(r"\b(an|a)(?= )\s+([A-Za-z]+)", fix, text, flags=re.IGNORECASE)


@dataclass(frozen=True)
class Vocabulary:
    emotions: dict[str, dict[int, list[str]]]
    actions: dict[str, dict[str, Any]]
    degrees: list[dict[str, Any]]
    persons: dict[str, list[str]]
    templates: list[str]
    templates_no_actions: list[str]

    # ------------------------------------------------------------------ writing
    def degree_word(self, strength: float, rng: np.random.Generator | None = None) -> str:
        for d in self.degrees:
            if strength < float(d["below"]):
                words = d["words"]
                return words[int(rng.integers(len(words)))] if rng is not None else words[0]
        return self.degrees[-1]["words"][0]

    def action_phrase(self, au: str, strength: float, rng: np.random.Generator | None = None) -> str:
        a = self.actions[au]
        parts = a["participles"]
        verb = parts[int(rng.integers(len(parts)))] if rng is not None else parts[0]
        deg = self.degree_word(strength, rng)
        if rng is not None and rng.random() < 0.5:
            return f"{a['part']} {deg} {verb}"  # "brow quite lowered"
        return f"{deg} {verb} {a['part']}"  # "fairly lifted cheek"

    def write(
        self,
        emotion: str,
        intensity: int,
        actions: Sequence[tuple[str, float]],
        gender: str = "unknown",
        rng: np.random.Generator | None = None,
        max_actions: int = 4,
        min_strength: float = 0.1,
    ) -> str:
        """One instruction. ``actions``: (AU field name, strength 0..1), strongest first is not required.
        Without ``rng`` the canonical wording is used (first words, first template)."""
        if emotion not in self.emotions:
            raise AvitalkError(f"unknown emotion {emotion!r}; known: {', '.join(self.emotions)}")
        words = self.emotions[emotion][int(intensity)]
        emo = words[int(rng.integers(len(words)))] if rng is not None else words[0]
        persons = self.persons.get(gender, self.persons["unknown"])
        person = persons[int(rng.integers(len(persons)))] if rng is not None else persons[-1]
        acts = sorted(
            [(a, s) for a, s in actions if a in self.actions and s >= min_strength], key=lambda t: -t[1]
        )[:max_actions]
        # one phrase per face part and wording (two AUs can share "lip")
        seen, phrases = set(), []
        for a, s in acts:
            key = (self.actions[a]["part"], self.actions[a]["participles"][0])
            if key not in seen:
                seen.add(key)
                phrases.append(self.action_phrase(a, s, rng))
        if phrases:
            if len(phrases) <= 2:
                joined = " and ".join(phrases)
            else:
                joined = ", ".join(phrases[:-1]) + ", and " + phrases[-1]
            tpl = self.templates[int(rng.integers(len(self.templates)))] if rng is not None else self.templates[0]
        else:
            joined = ""
            tpl = self.templates_no_actions[int(rng.integers(len(self.templates_no_actions)))] if rng is not None else self.templates_no_actions[0]
        text = tpl.format(emotion=emo, person=person, actions=joined)
        text = fix_articles(text)
        return text[0].upper() + text[1:]

    def replace_emotion(self, text: str, emotion: str, intensity: int | None = None) -> str:
        """``text`` with its emotion word replaced by the canonical word of ``emotion`` (at the same intensity unless
        given); the article before it is fixed (a/an). Text without a known emotion word gets none added."""
        if emotion not in self.emotions:
            raise AvitalkError(f"unknown emotion {emotion!r}; known: {', '.join(self.emotions)}")
        for w, _, i in self._emotion_lookup:
            m = re.search(rf"\b{re.escape(w)}\b", text, flags=re.IGNORECASE)
            if m:
                new = self.emotions[emotion][int(intensity or i)][0]
                out = text[: m.start()] + new + text[m.end() :]
                return fix_articles(out)
        return text

    # ------------------------------------------------------------------ reading
    @functools.cached_property
    def _emotion_lookup(self) -> list[tuple[str, str, int]]:
        pairs = [(w.lower(), e, int(i)) for e, levels in self.emotions.items() for i, ws in levels.items() for w in ws]
        return sorted(pairs, key=lambda p: -len(p[0]))  # longest first: "utterly contemptuous" before "contemptuous"

    def emotion_spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the emotion words (which also carry the intensity) in ``text``."""
        spans: list[tuple[int, int]] = []
        low = text.lower()
        for w, _, _ in self._emotion_lookup:
            for m in re.finditer(r"(?<![a-z\-])" + re.escape(w) + r"(?![a-z\-])", low):
                if not any(a < m.end() and m.start() < b for a, b in spans):
                    spans.append((m.start(), m.end()))
        return sorted(spans)

    def parse(self, text: str) -> dict[str, Any]:
        """Emotion, intensity and (action, degree word) pairs found in ``text`` (None / empty when absent)."""
        low = " " + re.sub(r"[^a-z\- ]+", " ", text.lower()) + " "
        emotion = intensity = None
        for w, e, i in self._emotion_lookup:
            if f" {w} " in low:
                emotion, intensity = e, i
                break
        degree_words = sorted({w for d in self.degrees for w in d["words"]}, key=len, reverse=True)
        # longest phrases first, and each match is blanked out, so "lip corner pulled down" (AU15) is not also read
        # as "lip corner pulled" (AU12)
        pairs = sorted(((au, verb, a["part"]) for au, a in self.actions.items() for verb in a["participles"]),
                       key=lambda p: -len(p[1]) - len(p[2]))
        hits: list[tuple[int, str, str]] = []
        used: set[tuple[str, str]] = set()
        for au, verb, part in pairs:
            for deg in degree_words:
                for phrase in (f" {deg} {verb} {part} ", f" {part} {deg} {verb} "):
                    pos = low.find(phrase)
                    if pos >= 0 and (part, verb) not in used:
                        hits.append((pos, au, deg))
                        used.add((part, verb))
                        low = low[:pos] + " " + "#" * (len(phrase) - 2) + " " + low[pos + len(phrase):]
        found = [(au, deg) for _, au, deg in sorted(hits)]
        return {"emotion": emotion, "intensity": intensity, "actions": found}


@functools.lru_cache(maxsize=4)
def load_vocabulary(path: str | None = None) -> Vocabulary:
    import yaml

    p = Path(path) if path else prompts_dir() / "vocabulary.yaml"
    if not p.is_file():
        raise AvitalkError(f"{p}: instruction vocabulary not found (set AVITALK_PROMPTS to the prompts folder)")
    d = yaml.safe_load(p.read_text())
    emotions = {e: {int(k): list(v) for k, v in levels.items()} for e, levels in d["emotions"].items()}
    missing = [e for e in EMOTIONS if e not in emotions or set(emotions[e]) != set(INTENSITIES)]
    if missing:
        raise AvitalkError(f"{p}: emotions {missing} need words for intensities 1, 2 and 3")
    words = [w.lower() for levels in emotions.values() for ws in levels.values() for w in ws]
    dupes = sorted({w for w in words if words.count(w) > 1})
    if dupes:
        raise AvitalkError(f"{p}: emotion words must be unique across emotions and intensities; repeated: {dupes}")
    return Vocabulary(
        emotions=emotions,
        actions=dict(d["actions"]),
        degrees=list(d["degrees"]),
        persons={k: list(v) for k, v in d["persons"].items()},
        templates=list(d["templates"]),
        templates_no_actions=list(d["templates_no_actions"]),
    )


INTENSITY_WORDS = {1: "weak", 2: "medium", 3: "strong"}


def as_instruction(instruction):
    """The one conversion of user input to an ``Instruction``: an Instruction passes through; text is checked (not
    empty, at most MAX_INSTRUCTION_CHARS after a warned cut) and parsed; anything else is an InstructionError."""
    from .errors import InstructionError
    from .types import Instruction

    if isinstance(instruction, Instruction):
        return instruction
    if not isinstance(instruction, str):
        raise InstructionError(f"instruction must be text, got {type(instruction).__name__}")
    if not instruction.strip():
        raise InstructionError("the instruction is empty (write one sentence describing the face)")
    return parse_instruction(instruction)


def parse_instruction(text: str, truncate: bool = True):
    """An ``Instruction`` from free text, with emotion / intensity / actions filled in when the text follows the
    vocabulary (free text stays valid, with those fields empty)."""
    from .types import Instruction

    ins = Instruction.from_text(text, truncate=truncate)
    parsed = load_vocabulary().parse(ins.text)
    return Instruction(ins.text, emotion=parsed["emotion"], intensity=INTENSITY_WORDS.get(parsed["intensity"]),
                       actions=tuple(parsed["actions"]))

