from __future__ import annotations

from typing import Any

import pytest

from onwatch.uptime.specs import SpecError, json_steps, parse, status_ranges, validate


def refused(kind: str, config: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as caught:
        validate(kind, config)
    return str(caught.value)


def test_it_fills_safe_defaults_for_http() -> None:
    spec = parse("http", {"url": "https://shop.example.com/health"})
    assert spec.model_dump() == {
        "url": "https://shop.example.com/health",
        "method": "GET",
        "headers": {},
        "body": "",
        "accepted_status_codes": ["200-299"],
        "keyword": "",
        "keyword_absent": "",
        "regex": "",
        "regex_absent": "",
        "json_path": "",
        "json_expected": None,
        "max_latency_ms": None,
        "follow_redirects": True,
        "verify_tls": True,
        "cert_expiry_warn_days": 14,
        "ca_file": "",
    }


def test_it_stores_only_what_differs_from_the_defaults() -> None:
    config = {"url": "http://a.example/", "method": "post", "verify_tls": True, "port": None}
    del config["port"]
    assert validate("http", config) == {"url": "http://a.example/", "method": "POST"}


def test_a_stored_config_validates_to_itself() -> None:
    config = {
        "url": "https://a.example/api",
        "accepted_status_codes": ["200-299", 301],
        "json_path": "data.items[0].status",
        "json_expected": None,
        "headers": {"X-Token": "abc"},
        "max_latency_ms": 800,
    }
    stored = validate("http", config)
    assert stored == config
    assert validate("http", stored) == stored


def test_it_forbids_unknown_settings_by_name() -> None:
    assert refused("http", {"url": "http://a.example", "timout": 3}) == (
        "'timout' is not a setting of an HTTP check; remove it"
    )
    assert "'color'" in refused("tcp", {"host": "db", "port": 5432, "color": "red"})


def test_it_names_a_missing_setting() -> None:
    assert refused("http", {}) == "'url' is required for an HTTP check"
    assert refused("tcp", {"host": "db"}) == "'port' is required for a TCP check"


@pytest.mark.parametrize("url", ["ftp://a.example/", "a.example", "http://", "http://a b/"])
def test_it_refuses_urls_that_are_not_http(url: str) -> None:
    assert refused("http", {"url": url}) == "'url' must be a full http:// or https:// address"


def test_it_refuses_an_unknown_method() -> None:
    assert "'method' is not valid" in refused("http", {"url": "http://a", "method": "FETCH"})


@pytest.mark.parametrize("codes", [[], ["2xx"], [700], ["300-200"], ["abc-def"]])
def test_it_refuses_bad_status_codes(codes: list[Any]) -> None:
    assert "'accepted_status_codes'" in refused(
        "http", {"url": "http://a", "accepted_status_codes": codes}
    )


def test_status_codes_become_ranges() -> None:
    assert status_ranges(["200-299", 301, " 404 "]) == [(200, 299), (301, 301), (404, 404)]


def test_it_refuses_a_broken_pattern() -> None:
    message = refused("http", {"url": "http://a", "regex_absent": "error("})
    assert message.startswith("the pattern 'error(' is not a valid regular expression")


def test_it_refuses_a_header_with_a_line_break() -> None:
    config = {"url": "http://a", "headers": {"X-A": "1\nX-Injected: 2"}}
    assert refused("http", config) == "'headers' has an invalid header: 'X-A'"


@pytest.mark.parametrize("path", ["data..x", "a[x]", ".a", "a[0", "a."])
def test_it_refuses_a_malformed_json_path(path: str) -> None:
    config = {"url": "http://a", "json_path": path, "json_expected": 1}
    assert refused("http", config) == "'json_path' must look like data.items[0].status"


def test_a_json_path_needs_its_expected_value_and_the_other_way_round() -> None:
    assert "'json_expected' is required" in refused("http", {"url": "http://a", "json_path": "a"})
    assert "needs 'json_path'" in refused("http", {"url": "http://a", "json_expected": 1})


def test_json_paths_split_into_keys_and_indexes() -> None:
    assert json_steps("data.items[0].status") == ["data", "items", 0, "status"]
    assert json_steps("[-1][2].a-b") == [-1, 2, "a-b"]


def test_it_refuses_negative_numbers_where_they_make_no_sense() -> None:
    assert "'max_latency_ms' is not valid" in refused(
        "http", {"url": "http://a", "max_latency_ms": 0}
    )
    assert "'warn_days' is not valid" in refused("tls", {"host": "a", "warn_days": -1})


@pytest.mark.parametrize("port", [0, 65536])
def test_it_refuses_ports_out_of_range(port: int) -> None:
    assert refused("tcp", {"host": "db", "port": port}) == (
        "'port' must be a port number from 1 to 65535"
    )


def test_it_refuses_a_host_that_is_not_a_host() -> None:
    message = refused("tcp", {"host": "db server/1", "port": 1})
    assert message == "'host' must be a host name or IP address, such as db.example.com"


def test_dns_defaults_and_record_types() -> None:
    assert parse("dns", {"name": "example.com"}).model_dump() == {
        "name": "example.com",
        "record_type": "A",
        "expected": "",
        "nameserver": "",
    }
    assert validate("dns", {"name": "example.com", "record_type": "mx"}) == {
        "name": "example.com",
        "record_type": "MX",
    }
    assert "'record_type' is not valid" in refused("dns", {"name": "a", "record_type": "SRV"})


@pytest.mark.parametrize("nameserver", ["9.9.9.9", "127.0.0.1:5353", "[::1]:53", "::1", "ns1"])
def test_it_takes_a_nameserver_with_or_without_port(nameserver: str) -> None:
    assert validate("dns", {"name": "a.example", "nameserver": nameserver})["nameserver"]


@pytest.mark.parametrize("nameserver", ["1.2.3.4:dns", "1.2.3.4:70000", "[::1]:x"])
def test_it_refuses_a_bad_nameserver(nameserver: str) -> None:
    assert "'nameserver'" in refused("dns", {"name": "a.example", "nameserver": nameserver})


def test_tls_defaults() -> None:
    spec = parse("tls", {"host": "shop.example.com"})
    assert spec.model_dump() == {
        "host": "shop.example.com",
        "port": 443,
        "server_name": "",
        "warn_days": 14,
        "ca_file": "",
    }


def test_it_refuses_an_unknown_kind_and_a_config_that_is_not_a_mapping() -> None:
    assert refused("smtp", {}) == "'smtp' is not a kind of check; use one of http, tcp, dns, tls"
    with pytest.raises(SpecError, match="must be a mapping"):
        validate("tcp", ["host", "port"])  # type: ignore[arg-type]


def test_a_type_error_names_the_nested_field() -> None:
    message = refused("http", {"url": "http://a", "accepted_status_codes": [200, [1]]})
    assert "accepted_status_codes" in message
    message = refused("http", {"url": "http://a", "headers": {"X-A": 5}})
    assert message.startswith("'headers.X-A' is not valid")


def test_heartbeats_go_through_the_same_gate() -> None:
    assert validate("heartbeat", {"period": 3600, "grace": 300}) == {"period": 3600, "grace": 300}
    assert refused("heartbeat", {"url": "http://a"}) == (
        "'url' is not a setting of a heartbeat; remove it"
    )
