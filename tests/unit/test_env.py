import pytest

from agentops.env import EnvError, env_bool, env_float, env_int, env_list, env_secret, env_str


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("", False),
    ],
)
def test_env_bool_reads_the_usual_words(raw, expected):
    assert env_bool("FLAG", not expected, {"FLAG": raw}) is expected


def test_env_bool_rejects_anything_else_naming_the_variable():
    with pytest.raises(EnvError, match="FLAG='maybe' is not a boolean"):
        env_bool("FLAG", False, {"FLAG": "maybe"})


def test_env_bool_default_when_unset():
    assert env_bool("FLAG", True, {}) is True


def test_env_int_parses_and_checks_bounds():
    assert env_int("N", 3, {"N": " 42 "}) == 42
    assert env_int("N", 3, {}) == 3
    with pytest.raises(EnvError, match="N='4x' is not an integer"):
        env_int("N", 3, {"N": "4x"})
    with pytest.raises(EnvError, match="below the minimum 1"):
        env_int("N", 3, {"N": "0"}, minimum=1)
    with pytest.raises(EnvError, match="above the maximum 10"):
        env_int("N", 3, {"N": "11"}, maximum=10)


def test_env_float_rejects_words_and_negatives():
    assert env_float("T", 1.0, {"T": "2.5"}) == 2.5
    with pytest.raises(EnvError, match="not a number"):
        env_float("T", 1.0, {"T": "soon"})
    with pytest.raises(EnvError, match="below the minimum"):
        env_float("T", 1.0, {"T": "-1"})


def test_env_secret_required_short_and_optional():
    with pytest.raises(EnvError, match="SECRET_KEY must be set"):
        env_secret("SECRET_KEY", {}, required=True)
    with pytest.raises(EnvError, match="too short"):
        env_secret("SECRET_KEY", {"SECRET_KEY": "abc"}, required=True)
    assert env_secret("SECRET_KEY", {"SECRET_KEY": "k" * 40}, required=True) == "k" * 40
    assert env_secret("TOKEN", {}, required=False) == ""


def test_env_list_and_str():
    assert env_list("HOSTS", ["a"], {"HOSTS": "x, y,,z"}) == ["x", "y", "z"]
    assert env_list("HOSTS", ["a"], {}) == ["a"]
    assert env_str("NAME", "d", {"NAME": " v "}) == "v"


def test_settings_refuse_to_start_without_secret_key_when_not_debug():
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "DJANGO_DEBUG": "0", "PROMETHEUS_MULTIPROC_DIR": "/tmp/agentops-prom-test"}
    result = subprocess.run(
        [sys.executable, "-c", "import agentops.settings"],
        env=env,
        capture_output=True,
        text=True,
        cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]),
    )
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_settings_reject_a_bad_boolean():
    import subprocess
    import sys
    from pathlib import Path

    env = {"PATH": "/usr/bin:/bin", "DJANGO_DEBUG": "perhaps", "PROMETHEUS_MULTIPROC_DIR": "/tmp/agentops-prom-test"}
    result = subprocess.run(
        [sys.executable, "-c", "import agentops.settings"],
        env=env,
        capture_output=True,
        text=True,
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    assert result.returncode != 0
    assert "DJANGO_DEBUG='perhaps' is not a boolean" in result.stderr
