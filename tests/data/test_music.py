"""Piano rolls from hand-made chorales, the JSB file and its errors, music21 quantisation."""

import json

import pytest
import torch

from recur_attn.data.music import (
    NUM_KEYS,
    JSBChoralesDataModule,
    collate_rolls,
    load_jsb_json,
    pitches_to_roll,
    roll_to_pitches,
)


def test_pitches_to_roll_hand_made():
    chorale = [[60, 64, 67], [], [21, 108], [60]]
    roll = pitches_to_roll(chorale)
    assert roll.shape == (4, NUM_KEYS)
    expected = torch.zeros(4, 88)
    expected[0, [39, 43, 46]] = 1  # C4 E4 G4 = MIDI 60 64 67 -> keys 39 43 46
    expected[2, [0, 87]] = 1  # A0 and C8, the ends of the keyboard
    expected[3, 39] = 1
    assert torch.equal(roll, expected)
    assert roll_to_pitches(roll) == [[60, 64, 67], [], [21, 108], [60]]


@pytest.mark.parametrize("bad", [[[20]], [[109]], [[60.5]], [60]])
def test_pitches_out_of_range_are_errors(bad):
    with pytest.raises(ValueError, match="mine"):
        pitches_to_roll(bad, where="mine")


def write_json(tmp_path, obj, name="jsb.json"):
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return p


def test_load_and_collate_hand_made(tmp_path):
    data = {
        "train": [[[60, 64], [62]], [[48], [50], [52]]],
        "valid": [[[72]]],
        "test": [[[55, 59, 62], [57]]],
    }
    path = write_json(tmp_path, data)
    splits = load_jsb_json(path)
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [2, 1, 1]
    assert roll_to_pitches(splits["train"][1]) == [[48], [50], [52]]
    batch = collate_rolls(splits["train"])
    x, y, lengths = batch["x"], batch["y"], batch["lengths"]
    assert x.shape == y.shape == (2, 3, 88)
    assert lengths.tolist() == [2, 3]
    assert torch.equal(x[:, 0], torch.zeros(2, 88))  # the first frame is predicted from silence
    assert torch.equal(x[:, 1:], y[:, :-1])  # input = targets shifted right by one step
    assert roll_to_pitches(y[0]) == [[60, 64], [62], []]  # padding past the end is zeros
    dm = JSBChoralesDataModule(path=str(path), batch_size=2)
    assert dm.dims == {"input_size": 88, "output_size": 88}
    b = next(iter(dm.val_dataloader()))
    assert roll_to_pitches(b["y"][0]) == [[72]]


def test_malformed_json_names_the_file_and_line(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('{"train": [[[60]]],\n "valid": x}')
    with pytest.raises(ValueError, match=r"broken\.json: malformed JSON at line 2"):
        load_jsb_json(p)


def test_wrong_structure_names_the_file(tmp_path):
    p = write_json(tmp_path, {"train": [[[60]]], "valid": [[[60]]]}, "nosplit.json")
    with pytest.raises(ValueError, match=r"nosplit\.json.*test"):
        load_jsb_json(p)
    p = write_json(tmp_path, {"train": [[[60]]], "valid": [[[60]]], "test": [[[200]]]}, "badpitch.json")
    with pytest.raises(ValueError, match=r"badpitch\.json: test\[0\], step 0: pitch 200"):
        load_jsb_json(p)


def test_missing_file_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="jsb-chorales-quarter.json"):
        load_jsb_json(tmp_path / "nothing.json")


def test_repository_copy_is_the_boulanger_lewandowski_split(tmp_path):
    # data_dir without the file -> the repository's copy
    dm = JSBChoralesDataModule(data_dir=str(tmp_path))
    dm.setup()
    assert [len(dm.splits[s]) for s in ("train", "valid", "test")] == [229, 76, 77]
    assert [dm.splits[s].num_frames for s in ("train", "valid", "test")] == [13807, 4602, 4725]


@pytest.mark.slow  # importing music21 takes seconds
def test_music21_quantisation_on_a_hand_made_score():
    m21 = pytest.importorskip("music21")
    from recur_attn.data.music import music21_chorale_roll

    s = m21.stream.Score()
    soprano, bass = m21.stream.Part(), m21.stream.Part()
    soprano.append(m21.note.Note("C5", quarterLength=2))  # sounds at t = 0, 1
    soprano.append(m21.note.Note("D5", quarterLength=0.5))  # t = 2
    soprano.append(m21.note.Note("E5", quarterLength=0.5))  # starts at 2.5: not on a beat, dropped
    soprano.append(m21.note.Note("F5", quarterLength=1))  # t = 3
    bass.append(m21.note.Note("C3", quarterLength=4))  # t = 0..3
    s.insert(0, soprano)
    s.insert(0, bass)
    roll = music21_chorale_roll(s)
    assert roll_to_pitches(roll) == [[48, 72], [48, 72], [48, 74], [48, 77]]
