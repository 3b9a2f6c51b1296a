"""Sample inputs shared by the tests: the seed's cluster of three Droonga nodes."""

CATALOG_V2 = {
    "version": 2,
    "effectiveDate": "2014-02-28T00:00:00Z",
    "datasets": {"Default": {"nWorkers": 4, "plugins": ["groonga"], "schema": {}, "replicas": [
        {"dimension": "_key", "slicer": "hash", "slices": [
            {"label": "slice000", "weight": 50,
             "volume": {"address": f"192.168.100.{50 + i}:10031/droonga.000"}},
            {"label": "slice001", "weight": 50,
             "volume": {"address": f"192.168.100.{50 + i}:10031/droonga.001"}}]}
        for i in range(3)
    ]}},
}
NODES = [f"192.168.100.{50 + i}:10031/droonga" for i in range(3)]
