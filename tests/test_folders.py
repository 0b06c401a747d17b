"""engines/folders.py: folders checked before use, and cache files written whole."""
import json
import threading

import pytest

from engines.errors import StudioError
from engines.folders import check_writable, write_atomically


def test_check_writable_makes_the_folder_and_names_the_key_of_one_it_cannot_write(tmp_path):
    made = check_writable(tmp_path / "a" / "b", "data.cache_dir")
    assert made.is_dir() and list(made.iterdir()) == []            # its probe file is gone
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(StudioError, match=r"data.cache_dir '.*a-file/x' is not a writable folder \(Not a directory\)"):
        check_writable(blocker / "x", "data.cache_dir")


def test_write_atomically_replaces_the_file_whole_and_a_failed_write_leaves_the_old_one(tmp_path):
    path = tmp_path / "cache" / "result.json"
    write_atomically(path, lambda tmp: open(tmp, "w").write('{"n": 1}'))
    assert json.loads(path.read_text()) == {"n": 1}

    def fails(tmp):
        open(tmp, "w").write('{"n": 2')   # half written, then the process fails
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomically(path, fails)
    assert json.loads(path.read_text()) == {"n": 1} and [p.name for p in path.parent.iterdir()] == ["result.json"]


def test_two_writers_of_one_cache_file_at_once_leave_one_whole_file(tmp_path):
    path = tmp_path / "renders.json"
    start = threading.Barrier(8)
    errors = []

    def writer(i):
        try:
            start.wait()
            write_atomically(path, lambda tmp: open(tmp, "w").write(json.dumps({"writer": i, "pad": "x" * 200_000})))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert json.loads(path.read_text())["writer"] in range(8)      # one of them, whole
    assert [p.name for p in tmp_path.iterdir()] == ["renders.json"]
