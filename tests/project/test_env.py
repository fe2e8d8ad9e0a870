"""project/env.py: the parsing rules behind every setting of the web part and the workers
(tests/project/test_settings.py checks them through project.settings, in fresh interpreters)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from project.env import (env_bool, env_choice, env_database, env_float, env_int, env_list, env_log_level, env_rate,
                         env_str, env_url)


@pytest.mark.parametrize("value", [None, "", "  "])
def test_unset_and_empty_mean_the_default(value):
    env = {} if value is None else {"X": value}
    assert env_bool("X", True, env) is True and env_int("X", 7, 0, env) == 7 and env_str("X", "d", env) == "d"
    assert env_list("X", "a, b,", env) == ["a", "b"] and env_url("X", "", ("ws",), env) == ""


@pytest.mark.parametrize("value, expected", [("1", True), ("TRUE", True), (" yes ", True), ("on", True),
                                             ("0", False), ("false", False), ("No", False), ("off", False)])
def test_booleans(value, expected):
    assert env_bool("X", not expected, {"X": value}) is expected


@pytest.mark.parametrize("parse", [
    lambda env: env_bool("SOME_FLAG", False, env),
    lambda env: env_int("SOME_NUMBER", 1, 0, env),
    lambda env: env_choice("SOME_CHOICE", "a", ("a", "b"), env),
    lambda env: env_log_level("SOME_LEVEL", "INFO", env),
    lambda env: env_url("SOME_URL", "", ("redis",), env),
    lambda env: env_database("SOME_DATABASE", "sqlite:///x", env),
])
def test_a_bad_value_names_its_variable(parse):
    with pytest.raises(ImproperlyConfigured, match=r"^SOME_[A-Z]+\b"):
        parse({key: "x://:hunter2@h:port/-1" for key in ("SOME_FLAG", "SOME_NUMBER", "SOME_CHOICE", "SOME_LEVEL",
                                                          "SOME_URL", "SOME_DATABASE")})


def test_numbers_have_a_floor():
    assert env_int("N", 1, 0, {"N": "0"}) == 0
    with pytest.raises(ImproperlyConfigured, match="N='-1' is below 0"):
        env_int("N", 1, 0, {"N": "-1"})


def test_seconds_may_be_fractions_with_a_floor_and_must_be_finite():
    assert env_float("T", 10, 1, {}) == 10 and env_float("T", 10, 1, {"T": " 2.5 "}) == 2.5
    for value, problem in (("0.5", "is below 1"), ("abc", "is not a number"), ("inf", "is not a finite number"),
                           ("nan", "is not a finite number")):
        with pytest.raises(ImproperlyConfigured, match=f"^T='{value}' {problem}"):
            env_float("T", 10, 1, {"T": value})


def test_url_messages_leave_the_value_out():
    for value in ("redis://:hunter2@bus:port/0", "http://:hunter2@bus/0"):
        with pytest.raises(ImproperlyConfigured) as error:
            env_url("REDIS_URL", "", ("redis",), {"REDIS_URL": value})
        assert "hunter2" not in str(error.value) and str(error.value).startswith("REDIS_URL")
    with pytest.raises(ImproperlyConfigured) as error:
        env_database("DATABASE_URL", "", {"DATABASE_URL": "postgres://chat:hunter2@db:port/chat"})
    assert "hunter2" not in str(error.value) and str(error.value).startswith("DATABASE_URL")


@pytest.mark.parametrize("value", ["10/min", "30/s", "1/hour", "5/day", "7/m"])
def test_rates_in_rest_framework_s_form(value):
    assert env_rate("RATE", "1/s", {"RATE": value}) == value


@pytest.mark.parametrize("value", ["10", "0/min", "-1/s", "x/min", "10/", "10/week", "10/min/x", "10/Min"])
def test_a_rate_rest_framework_cannot_read_is_refused(value):
    with pytest.raises(ImproperlyConfigured, match="^RATE="):
        env_rate("RATE", "1/s", {"RATE": value})
