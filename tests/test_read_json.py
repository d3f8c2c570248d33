"""A JSON file a user gave us that is broken or not UTF-8 is one clear line, never a traceback."""

import pytest

from tokenbounds.errors import UserError
from tokenbounds.files import read_json
from tokenbounds.models.parametrization import SPEC_FILE, read_spec


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe{}", b""])
def test_broken_json_is_one_line(tmp_path, content):
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(UserError, match="is not valid JSON") as err:
        read_json(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    (tmp_path / SPEC_FILE).write_bytes(content)  # the trained-GPT spec goes through it (not-UTF-8 used to escape)
    with pytest.raises(UserError, match="is not valid JSON"):
        read_spec(tmp_path)


def test_valid_json_is_parsed(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"a": [1, 2]}')
    assert read_json(path) == {"a": [1, 2]}
