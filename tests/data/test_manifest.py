"""engines/data/manifest.py: reading a user's CSV of labels and finding a piece's entry."""
import pytest

from engines.data.manifest import OPTIONAL, lookup, normalise_key, read_manifest
from engines.errors import StudioError


def write(tmp_path, text, name="labels.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def manifest_error(tmp_path, text) -> str:
    with pytest.raises(StudioError) as info:
        read_manifest(write(tmp_path, text))
    return str(info.value)


def test_happy_path(tmp_path):
    path = write(tmp_path, "path,mode,rebracketing,temporal_complexity,valence,energy\n"
                           "songs/intro.mid,BLUE,,0.7,,\n"
                           "bach/bwv1.6,red,0.25,,-0.5,1\n"
                           " Outro.MIDI , violet ,0,1,1,0\n")
    labels = read_manifest(path)
    assert labels == {
        "songs/intro": {"mode": "BLUE", "temporal_complexity": 0.7},
        "bach/bwv1.6": {"mode": "RED", "rebracketing": 0.25, "valence": -0.5, "energy": 1.0},
        "outro": {"mode": "VIOLET", "rebracketing": 0.0, "temporal_complexity": 1.0, "valence": 1.0, "energy": 0.0},
    }


def test_byte_order_mark_and_spaced_header(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffpath , mode\nx.mid,GREEN\n".encode("utf-8"))
    assert read_manifest(path) == {"x": {"mode": "GREEN"}}


def test_missing_file(tmp_path):
    with pytest.raises(StudioError, match="does not exist"):
        read_manifest(tmp_path / "nope.csv")


def test_missing_column(tmp_path):
    message = manifest_error(tmp_path, "file,mode\na.mid,RED\n")
    assert message == "manifest 'labels.csv' needs the columns 'path' and 'mode'; it has: file, mode"


def test_unknown_column(tmp_path):
    message = manifest_error(tmp_path, "path,mode,sadness\na.mid,RED,1\n")
    assert "unknown column 'sadness'" in message and ", ".join(OPTIONAL) in message


def test_bad_mode_names_line(tmp_path):
    message = manifest_error(tmp_path, "path,mode\na.mid,RED\nb.mid,BLUE\nc.mid,PURPLE\n")
    assert message.startswith("manifest 'labels.csv' line 4: mode 'PURPLE' is not one of BLACK, RED, ORANGE")


def test_empty_mode_is_an_error(tmp_path):
    assert "line 2: mode ''" in manifest_error(tmp_path, "path,mode\na.mid,\n")


def test_non_numeric_attribute(tmp_path):
    message = manifest_error(tmp_path, "path,mode,energy\na.mid,RED,0.5\nb.mid,RED,high\n")
    assert message == "manifest 'labels.csv' line 3: energy 'high' is not a number"


@pytest.mark.parametrize("column, value, bounds", [
    ("valence", "-1.5", "[-1, 1]"), ("energy", "1.2", "[0, 1]"), ("rebracketing", "-0.1", "[0, 1]"),
])
def test_out_of_range(tmp_path, column, value, bounds):
    message = manifest_error(tmp_path, f"path,mode,{column}\na.mid,RED,{value}\n")
    assert f"line 2: {column} = {float(value)} must lie in {bounds}" in message


def test_valence_may_be_negative(tmp_path):
    assert read_manifest(write(tmp_path, "path,mode,valence\na.mid,RED,-1\n"))["a"]["valence"] == -1.0


@pytest.mark.parametrize("raw, key", [
    ("songs/Intro.MID", "songs/intro"), ("./songs/intro.mid", "songs/intro"), ("songs\\intro.midi", "songs/intro"),
    ("  Bach/BWV1.6  ", "bach/bwv1.6"), ("bach/bwv1.6.mxl", "bach/bwv1.6"), ("tune.abc", "tune"),
    ("notes.txt", "notes.txt"),
])
def test_normalise_key(raw, key):
    assert normalise_key(raw) == key


@pytest.fixture
def labels(tmp_path):
    return read_manifest(write(tmp_path, "path,mode\nsongs/Intro.mid,BLUE\nOutro.mid,RED\nbach/bwv1.6,GREEN\n"))


def test_lookup_by_relative_path(labels):
    assert lookup(labels, "midi/intro", "/data/me/songs/intro.mid", root="/data/me") == {"mode": "BLUE"}
    # the same file name elsewhere is not the relative path the manifest names
    assert lookup(labels, "midi/intro", "/data/me/other/intro.mid", root="/data/me") is None


def test_lookup_by_basename(labels):
    assert lookup(labels, "midi/x", "/anywhere/deep/OUTRO.MID", root="/anywhere") == {"mode": "RED"}


def test_lookup_by_piece_id(labels):
    assert lookup(labels, "bach/bwv1.6") == {"mode": "GREEN"}
    assert lookup(labels, "bach/bwv1.6#2") == {"mode": "GREEN"}  # every tune of an opus file
    assert lookup(labels, "bach/bwv1.7") is None


def test_lookup_order_prefers_relative_path(tmp_path):
    labels = read_manifest(write(tmp_path, "path,mode\na/song.mid,BLUE\nsong.mid,RED\n"))
    assert lookup(labels, "midi/song", "/r/a/song.mid", root="/r") == {"mode": "BLUE"}
    assert lookup(labels, "midi/song", "/r/b/song.mid", root="/r") == {"mode": "RED"}
