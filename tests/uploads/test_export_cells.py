"""An export says how many files a file answer holds, never their ids."""

from __future__ import annotations

from healthforms.exports.table import files_cell


def test_a_file_answer_is_counted_not_listed() -> None:
    assert files_cell(["upl_aaaaaaaaaaaa", "upl_bbbbbbbbbbbb"]) == "2 files attached"
    assert files_cell(["upl_aaaaaaaaaaaa"]) == "1 file attached"
    assert files_cell([]) == "" and files_cell(None) == ""
