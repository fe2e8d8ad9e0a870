"""The gateway's settings as read from an environment mapping."""

from __future__ import annotations

import dataclasses

import pytest

from websockets_gateway.settings import DEFAULT_ALLOWED_ORIGINS, GatewaySettings, SettingsError


def test_defaults():
    settings = GatewaySettings.from_env({})
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.worker_topics == () and settings.discovery  # the workers registered in Redis
    assert settings.response_topic == "worker_response"
    assert settings.allowed_origins == frozenset(DEFAULT_ALLOWED_ORIGINS.split(","))
    assert settings.request_timeout == 10.0
    assert settings.auth_timeout == 10.0
    assert settings.ws_max_message_size == 65536
    assert settings.max_in_flight == 32
    assert settings.send_queue_size == 256
    assert settings.rate_limit == 30.0
    assert settings.rate_burst == 60
    assert settings.ws_compression is False
    assert settings.ws_heartbeat == 30.0
    assert settings.max_connections == 10000
    assert settings.presence_ttl == 15.0


def test_values_from_the_environment():
    settings = GatewaySettings.from_env({
        "REDIS_URL": "redis://redis.internal:6380/2",
        "WORKER_PROCESS_TOPICS": " w1, w2 ,,w3 ",
        "WORKER_RESPONSE_TOPIC": "responses",
        "ALLOWED_ORIGINS": "https://chat.example, https://www.chat.example",
        "REQUEST_TIMEOUT": "2.5",
        "AUTH_TIMEOUT": "3",
        "WS_MAX_MESSAGE_SIZE": "1024",
        "MAX_IN_FLIGHT": "4",
        "SEND_QUEUE_SIZE": "8",
        "RATE_LIMIT": "0.5",
        "RATE_LIMIT_BURST": "5",
        "WS_COMPRESSION": "yes",
        "WS_HEARTBEAT": "0",
        "MAX_CONNECTIONS": "7",
        "PRESENCE_TTL": "4.5",
    })
    assert settings.redis_url == "redis://redis.internal:6380/2"
    assert settings.worker_topics == ("w1", "w2", "w3")
    assert settings.response_topic == "responses"
    assert settings.allowed_origins == frozenset({"https://chat.example", "https://www.chat.example"})
    assert settings.request_timeout == 2.5
    assert settings.auth_timeout == 3.0
    assert settings.ws_max_message_size == 1024 and isinstance(settings.ws_max_message_size, int)
    assert settings.max_in_flight == 4
    assert settings.send_queue_size == 8
    assert settings.rate_limit == 0.5
    assert settings.rate_burst == 5
    assert settings.ws_compression is True
    assert settings.ws_heartbeat == 0.0
    assert settings.max_connections == 7
    assert settings.presence_ttl == 4.5


def test_empty_values_mean_the_defaults():
    settings = GatewaySettings.from_env({"REDIS_URL": "", "WORKER_PROCESS_TOPICS": "", "REQUEST_TIMEOUT": ""})
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.worker_topics == () and settings.discovery
    assert settings.request_timeout == 10.0


def test_a_star_allows_any_origin():
    assert GatewaySettings.from_env({"ALLOWED_ORIGINS": "*"}).allowed_origins is None
    assert GatewaySettings.from_env({"ALLOWED_ORIGINS": "http://a.example,*"}).allowed_origins is None


def test_an_empty_origin_list_allows_no_browser_origin():
    assert GatewaySettings.from_env({"ALLOWED_ORIGINS": ""}).allowed_origins == frozenset()


@pytest.mark.parametrize("value, expected", [("1", True), ("TRUE", True), ("on", True), ("0", False),
                                             ("no", False), ("", False), ("maybe", False)])
def test_ws_compression_flag(value, expected):
    assert GatewaySettings.from_env({"WS_COMPRESSION": value}).ws_compression is expected


def test_topics_that_name_nothing_are_an_error():
    with pytest.raises(SettingsError, match="WORKER_PROCESS_TOPICS"):
        GatewaySettings.from_env({"WORKER_PROCESS_TOPICS": " , ,"})


@pytest.mark.parametrize(
    "name, value",
    [
        ("REQUEST_TIMEOUT", "soon"),
        ("AUTH_TIMEOUT", "ten"),
        ("WS_MAX_MESSAGE_SIZE", "64k"),
        ("WS_MAX_MESSAGE_SIZE", "1.5"),
        ("MAX_IN_FLIGHT", "many"),
        ("RATE_LIMIT_BURST", "2.0"),
        ("PRESENCE_TTL", "15s"),
    ],
)
def test_a_value_of_the_wrong_kind_is_an_error(name, value):
    with pytest.raises(SettingsError, match=f"{name}='{value}' is not a"):
        GatewaySettings.from_env({name: value})


@pytest.mark.parametrize(
    "name, value",
    [
        ("REQUEST_TIMEOUT", "0"),
        ("AUTH_TIMEOUT", "-1"),
        ("WS_MAX_MESSAGE_SIZE", "127"),
        ("MAX_IN_FLIGHT", "0"),
        ("SEND_QUEUE_SIZE", "0"),
        ("RATE_LIMIT", "0"),
        ("RATE_LIMIT_BURST", "0"),
        ("WS_HEARTBEAT", "-0.5"),
        ("PRESENCE_TTL", "0.5"),
    ],
)
def test_a_value_below_its_minimum_is_an_error(name, value):
    with pytest.raises(SettingsError, match=f"{name}='{value}' is below"):
        GatewaySettings.from_env({name: value})


def test_settings_error_is_a_value_error():
    assert issubclass(SettingsError, ValueError)


def test_settings_are_frozen():
    settings = GatewaySettings.from_env({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.request_timeout = 1.0


def test_from_env_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("WORKER_RESPONSE_TOPIC", "from_os_environ")
    monkeypatch.setenv("MAX_IN_FLIGHT", "3")
    settings = GatewaySettings.from_env()
    assert settings.response_topic == "from_os_environ"
    assert settings.max_in_flight == 3


def test_trusted_proxies_are_addresses_or_networks():
    import ipaddress

    settings = GatewaySettings.from_env({"TRUSTED_PROXIES": "10.0.0.5, 172.16.0.0/12,fd00::/8"})
    assert settings.trusted_proxies == (ipaddress.ip_network("10.0.0.5/32"), ipaddress.ip_network("172.16.0.0/12"),
                                        ipaddress.ip_network("fd00::/8"))
    assert GatewaySettings.from_env({}).trusted_proxies == ()
    # Host bits set are accepted as the network they belong to.
    assert GatewaySettings.from_env({"TRUSTED_PROXIES": "10.1.2.3/8"}).trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),)


@pytest.mark.parametrize("value", ["nginx", "10.0.0.300", "10.0.0.0/33", "10.0.0.1,,bogus"])
def test_a_trusted_proxy_that_is_no_address_is_an_error_naming_the_variable(value):
    with pytest.raises(SettingsError, match=r"TRUSTED_PROXIES: '.*' is not an IP address or network"):
        GatewaySettings.from_env({"TRUSTED_PROXIES": value})


def test_max_connections_per_ip_is_off_by_default_and_not_negative():
    assert GatewaySettings.from_env({}).max_connections_per_ip == 0
    assert GatewaySettings.from_env({"MAX_CONNECTIONS_PER_IP": "50"}).max_connections_per_ip == 50
    with pytest.raises(SettingsError, match="MAX_CONNECTIONS_PER_IP='-1' is below"):
        GatewaySettings.from_env({"MAX_CONNECTIONS_PER_IP": "-1"})
    with pytest.raises(SettingsError, match="MAX_CONNECTIONS_PER_IP='many' is not a"):
        GatewaySettings.from_env({"MAX_CONNECTIONS_PER_IP": "many"})


@pytest.mark.parametrize("value, cluster", [("1", True), ("TRUE", True), (" on ", True), ("yes", True),
                                            ("0", False), ("off", False), ("", False)])
def test_redis_cluster(value, cluster):
    assert GatewaySettings.from_env({"REDIS_CLUSTER": value}).redis_cluster is cluster
    assert GatewaySettings.from_env({}).redis_cluster is False


def test_a_bad_redis_cluster_is_refused():
    with pytest.raises(SettingsError, match="REDIS_CLUSTER='maybe' is not a boolean"):
        GatewaySettings.from_env({"REDIS_CLUSTER": "maybe"})
