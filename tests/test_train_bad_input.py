"""Bad input to `train.py`'s arguments: each case is handled as docs/bad_input.md says or stopped by an error that
names the input and the fix. Every test here is a row of that table, under the same name."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")  # many small forward passes (conftest)


# ---- train.py arguments
@pytest.mark.parametrize(
    "argv, named",
    [
        (["--normalization", "globl"], "--normalization 'globl' is not one of global, utterance, none"),
        (["--unimodal_tap", "post"], "--unimodal_tap: invalid choice: 'post'"),  # argparse's choices
        ({"unimodal_tap": "post"}, "--unimodal_tap 'post' is not one of pre_gru, post_gru"),  # a file meets no choices
        ({"text_padding": "max"}, "--text_padding 'max' is not one of longest, max_length"),
        (["--mlcs_taps", "fusion", "fuson"], "--mlcs_taps ['fusion', 'fuson']: pass one or more of"),
        (["--max_duration_s", "0"], "--max_duration_s 0.0: pass a positive number of seconds"),
        (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size 0: pass a whole number >= 1"),
        (["--mlcs_temperature", "-1"], "--mlcs_temperature -1.0: pass a positive number"),
        ({"normalization": "Global"}, "--normalization 'Global' is not one of"),  # from a config file
    ],
)
def test_train_arguments_are_checked_where_parsed(tmp_path, capsys, argv, named):
    from training_helpers import load_train_script

    if isinstance(argv, dict):
        config = tmp_path / "run.json"
        config.write_text(json.dumps({"manifest": "m.csv", **argv}))
        argv = [str(config)]
    else:
        argv = ["--manifest", "m.csv", *argv]
    with pytest.raises(SystemExit) as stop:
        load_train_script().parse_arguments(argv)
    assert stop.value.code == 2 and named in capsys.readouterr().err
