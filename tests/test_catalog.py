"""Droonga catalogs: version 2 (with nested replicas), version 1 node lists, bad input."""

import json

from samples import CATALOG_V2, NODES

from membership_log.core.catalog import parse, parse_node_id


def test_v2_catalog_from_the_droonga_reference():
    cat, warnings = parse(json.dumps(CATALOG_V2).encode())
    assert warnings == []
    assert cat.version == 2
    assert [n.id for n in cat.nodes] == NODES
    assert cat.nodes[0].host == "192.168.100.50" and cat.nodes[0].port == 10031


def test_v2_nested_replicas_are_followed():
    inner = {"replicas": [{"slices": [{"volume": {"address": "10.0.0.9:10031/droonga.0"}}]}]}
    doc = {"version": 2, "datasets": {"D": {"replicas": [
        {"slices": [{"volume": {"address": "10.0.0.1:10031/droonga.0"}}, {"volume": inner}]}
    ]}}}
    cat, _ = parse(json.dumps(doc).encode())
    assert [n.id for n in cat.nodes] == ["10.0.0.1:10031/droonga", "10.0.0.9:10031/droonga"]


def test_v1_zones_possibly_nested():
    doc = {"version": 1, "zones": ["a:1/t", ["b:2/t", ["c:3/t"]]], "datasets": {"D": {"ring": {}}}}
    cat, _ = parse(json.dumps(doc).encode())
    assert [n.id for n in cat.nodes] == ["a:1/t", "b:2/t", "c:3/t"]


def test_malformed_and_duplicate_addresses():
    doc = {"version": 2, "datasets": {"D": {"replicas": [{"slices": [
        {"volume": {"address": "10.0.0.1:10031/droonga.000"}},
        {"volume": {"address": "10.0.0.1:10031/droonga.001"}},
        {"volume": {"address": "no-port/droonga.0"}},
        {"volume": {"address": 42}},
    ]}]}}}
    cat, warnings = parse(json.dumps(doc).encode())
    assert [n.id for n in cat.nodes] == ["10.0.0.1:10031/droonga"]
    assert len([w for w in warnings if "volume address must be" in w]) == 2


def test_unusable_catalogs_give_none_and_a_reason():
    for data in [b"{oops", b"[]", b'{"version": 2}', b'{"version": 2, "datasets": {}}',
                 b"\xff\xfe"]:
        cat, warnings = parse(data)
        assert cat is None and warnings, data


def test_node_id_parsing():
    assert parse_node_id("192.168.0.10:10031/droonga.000").id == "192.168.0.10:10031/droonga"
    assert parse_node_id("h:x/droonga") is None
    assert parse_node_id("h:1") is None
