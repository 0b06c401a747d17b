"""The unified vocabulary (engines/tokenizers/vocabulary.py): its ranges, text, MIDI and audio spans and
its file format."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engines.errors import StudioError
from engines.tokenizers.midi import decode_tokens
from engines.tokenizers.vocabulary import (AUDIO, BOS, EOS, MIDI, SPECIALS, TEXT, UNK, UnifiedVocabulary,
                                           remi_token_names, split_words)
from tests.conftest import note_tuples


# ---- vocabulary -------------------------------------------------------------------------------------------
def test_vocabulary_ranges_follow_specials_text_midi_audio(vocabulary):
    v = vocabulary
    assert v.text_start == len(SPECIALS) and v.midi_start == v.text_start + len(v.words)
    assert v.audio_start == v.midi_start + len(remi_token_names()) and len(v) == v.audio_start + 8
    assert v.words[0] == "a"  # most frequent first
    assert [v.modality_of(i) for i in (0, v.text_start, v.midi_start, v.audio_start)] == \
           ["special", "text", "midi", "audio"]
    with pytest.raises(StudioError, match="outside the vocabulary"):
        v.modality_of(len(v))


def test_text_round_trips_and_unknown_words_become_unk(vocabulary):
    assert split_words("A calm, intimate BLUE phrase in 3/4") == ["a", "calm", ",", "intimate", "blue", "phrase",
                                                                  "in", "3/4"]
    ids = vocabulary.encode_text("a calm, intimate BLUE phrase")
    assert vocabulary.decode_text(ids) == "a calm, intimate blue phrase"
    assert vocabulary.encode_text("a purple phrase")[1] == UNK


def test_midi_span_round_trips_a_corpus_segment(vocabulary, corpus_cache):
    remi = corpus_cache.segment_tokens(3).astype(int)
    ids = vocabulary.encode(text="a calm phrase", midi=remi)
    assert ids[0] == BOS and ids[1] == TEXT and ids[-1] == EOS and MIDI in ids
    spans = vocabulary.spans(ids)
    assert set(spans) == {"text", "midi"} and vocabulary.decode_midi(spans["midi"]) == remi.tolist()
    decoded = vocabulary.decode(ids)
    assert decoded["text"] == "a calm phrase"
    assert note_tuples(decoded["midi"].notes) == note_tuples(decode_tokens(remi).notes)


def test_audio_codes_flatten_frame_by_frame_and_come_back(vocabulary):
    codes = np.array([[0, 1, 2], [3, 2, 1]])  # [n_q, frames]
    ids = vocabulary.encode_audio(codes)
    a = vocabulary.audio_start
    assert ids == [a + 0, a + 4 + 3, a + 1, a + 4 + 2, a + 2, a + 4 + 1]
    assert (vocabulary.decode_audio(ids + [a]) == codes).all()  # a trailing partial frame is dropped
    assert (vocabulary.decode(vocabulary.encode(audio=codes))["audio"] == codes).all()
    with pytest.raises(StudioError, match="codebook order"):
        vocabulary.decode_audio([ids[1], ids[0]])
    with pytest.raises(StudioError, match=r"shaped \[2, frames\]"):
        vocabulary.encode_audio(np.zeros((3, 2), int))
    assert AUDIO in vocabulary.encode(audio=codes)


def test_vocabulary_saves_as_json_and_refuses_another_format(vocabulary):
    data = json.loads(json.dumps(vocabulary.to_dict()))
    assert UnifiedVocabulary.from_dict(data) == vocabulary
    with pytest.raises(StudioError, match="another version"):
        UnifiedVocabulary.from_dict({**data, "format": 99})
