"""The one-line error format that the command line prints for bad input."""

from __future__ import annotations

from soilsource.errors import InputError, format_rows


def test_input_error_line_names_file_and_key():
    err = InputError("config.yaml", "key 'patch.size_m'", "must be positive")
    assert err.line() == "config.yaml: key 'patch.size_m': must be positive"
    assert "\n" not in err.line()


def test_input_error_without_where():
    assert InputError("a.tif", "", "not found").line() == "a.tif: not found"


def test_format_rows_singular_plural_and_limit():
    assert format_rows([5]) == "row 5"
    assert format_rows([1, 2]) == "rows 1, 2"
    assert format_rows(list(range(1, 30)), limit=2) == "rows 1, 2 and 27 more"


def test_input_error_survives_pickling():
    """A run in another process (several metals) hands its one-line error back intact."""
    import pickle

    error = pickle.loads(pickle.dumps(InputError("samples.csv", "row 3", "no value")))
    assert isinstance(error, InputError) and error.line() == "samples.csv: row 3: no value"
