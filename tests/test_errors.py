"""medseg.errors: the error for bad input names the file, and survives pickling (worker processes)."""
from __future__ import annotations

import pickle
from pathlib import Path

from medseg.errors import MedsegInputError


def test_error_message_names_the_file_and_survives_pickling():
    err = MedsegInputError(Path("/data/x.png"), "mask is empty")
    assert isinstance(err, ValueError)
    assert str(err) == "/data/x.png: mask is empty"
    assert err.path == Path("/data/x.png") and err.problem == "mask is empty"
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.problem == "mask is empty"
