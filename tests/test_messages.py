"""The library's messages name its own parameters; the command line's name its flags (errors.option)."""

import ast
import pathlib
import re

import pytest
from common import run_cli

from cmpstore import api
from cmpstore.errors import UsageError
from cmpstore.synthetic import build_model

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "cmpstore"


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "lenet.caffemodel"
    api.save_model(build_model(seed=0), path)
    return path


def test_the_api_names_its_parameters(model_file, tmp_path):
    with pytest.raises(UsageError, match=r"output exists; use force=True to overwrite it") as caught:
        api.save_model(build_model(seed=0), model_file)
    assert "--" not in str(caught.value)
    with pytest.raises(UsageError, match=r"^ratios fc9: "):
        api.compress_weights(build_model(seed=0), ratios={"fc9": 1.5})
    with pytest.raises(UsageError, match=r"^ratios names layer 'fc9'"):
        api.compress_weights(build_model(seed=0), ratios={"fc9": 0.5})
    with pytest.raises(UsageError, match=r"index_bits"):
        api.encode(model_file, index_bits={"fc1": 99})


def test_the_command_line_names_its_flags(model_file, tmp_path):
    assert run_cli("encode", model_file, "-o", tmp_path / "x.cmps")[0] == 0
    code, _, err = run_cli("encode", model_file, "-o", tmp_path / "x.cmps")
    assert code == 2 and "use --force to overwrite it" in err
    code, _, err = run_cli("prune", model_file, "-o", tmp_path / "p.caffemodel", "--ratios", "fc9=0.5")
    assert code == 2 and "--ratios names layer 'fc9'" in err


def _message_strings():
    """Every string literal passed to an exception raised in the library (not the command line)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "cli.py" or "_proto" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                for part in ast.walk(node.exc):
                    if isinstance(part, ast.Constant) and isinstance(part.value, str):
                        yield path.relative_to(PACKAGE), part.value


def test_no_library_message_names_a_flag():
    flags = [(path, text) for path, text in _message_strings() if re.search(r"(^|[\s(])--[a-z]", text)]
    assert flags == []
