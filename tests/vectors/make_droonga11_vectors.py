"""Dev-only: regenerate ``droonga11.json``, the Droonga 1.1 reference outputs that
tests/test_droonga11.py holds the core and the renderer to.

Each case is answered by Ruby running droonga-engine v1.1.1's own classes
(``Serf#current_cluster_state``, ``Catalog::Loader#parse(...).cluster_id``) and Ruby's
``JSON.pretty_generate``. Neither is a project dependency; this is how the committed file
was made (Debian bookworm: ruby 3.1.2, json 2.6.1)::

    apt-get install -y ruby
    git --git-dir=<droonga-engine mirror> archive v1.1.1 lib | tar -x -C /tmp/droonga-1.1.1
    mkdir -p /tmp/rbstubs/archive   # serf.rb requires gems it does not use here
    touch /tmp/rbstubs/faraday.rb /tmp/rbstubs/faraday_middleware.rb /tmp/rbstubs/archive/zip.rb
    echo 'module Coolio; class TimerWatcher; end; end' > /tmp/rbstubs/coolio.rb
    python tests/vectors/make_droonga11_vectors.py /tmp/droonga-1.1.1 /tmp/rbstubs
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CID = "0123456789abcdef0123456789abcdef01234567"
OTHER = "ffffffffffffffffffffffffffffffffffffffff"


def member(name, status="alive", **tags):
    tags = {k.replace("_", "-") if k not in ("cluster_id",) else k: v for k, v in tags.items()}
    return {"name": name, "addr": "127.0.0.1", "port": 7946, "tags": tags, "status": status,
            "protocol": {"max": 5, "min": 2, "version": 4}}


def engine(name, status="alive", role="service-provider", cid=CID, **extra):
    tags = {"type": "engine", "role": role, "cluster_id": cid,
            "internal-name": name.replace(":10031", ":34567")}
    tags.update(extra)
    return {"name": name, "addr": name.split(":")[0], "port": 7946, "tags": tags,
            "status": status, "protocol": {"max": 5, "min": 2, "version": 4}}


A, B, C, D = (f"192.168.100.{50 + i}:10031/droonga" for i in range(4))

STATES = [
    [],
    [engine(A)],
    [engine(C, "failed"), engine(A), engine(B, "left", role="absorb-source"),
     engine(D, "leaving", role="absorb-destination",
            **{"accept-newer-than": "2015-04-09T06:04:18.123456Z"})],
    # foreign and untagged members are skipped, kept ones whatever the catalog says
    [engine(A), engine(B, cid=OTHER), member("observer", serf="yes"),
     engine("10.0.0.9:10031/droonga", role="ABSORB-SOURCE")],
    # buffered-for tags: any "true" wins, whichever member and order; a member's own counts
    [engine(A, **{f"buffered-for-{B}": "true"}), engine(B, **{f"buffered-for-{B}": "false"}),
     engine(C, **{f"buffered-for-{A}": "false"}),
     engine(D, "failed", **{f"buffered-for-{C}": "true", f"buffered-for-{A}": "true"})],
    [engine(A, **{f"buffered-for-{B}": "false"}), engine(B)],
    # a foreign member's buffered-for tag counts for nothing
    [engine(A), engine(B, cid=OTHER, **{f"buffered-for-{A}": "true"})],
    # sorting is bytewise
    [engine("b:1/x"), engine("B:1/x"), engine("a:10/x"), engine("a:9/x"), engine("é:1/x"),
     engine("z:1/x"), engine("日本:1/x"), engine("a:1/x"), engine("😀:1/x")],
    # missing tags are null; odd text is escaped as Ruby does
    [member(A, cluster_id=CID), member(B, "failed", cluster_id=CID, type="",
                                       role="nonsense", internal_name='q"\\/\n\t\u0001é\u2028')],
    # only foreign members: the empty state
    [engine(A, cid=OTHER)],
]

#: A case Droonga raises on (it then writes nothing); the core skips the tag instead.
RAISING_STATES = [
    [engine(A, **{f"buffered-for-{B}": "true"})],
    [engine(A), engine(B, cid=OTHER), engine(C, **{f"buffered-for-{B}": "true"})],
]

PRETTY = [
    {},
    {"a": {}},
    {"a": [], "b": [1, [], {}, [[]]], "c": {"d": {}}},
    {"k": None, "t": True, "f": False, "n": -12, "big": 12345678901234567890},
    {"all ascii": "".join(chr(i) for i in range(128))},
    {"\u00e9\u65e5\U0001f600\u2028\u2029\u007f/": "\u00e9\u65e5\U0001f600\u2028\u2029"},
    {'"quoted\\key"': {"nested": {"deeper": ["x", {"y": "z"}]}}},
    [],
    [{}],
]


def catalog(*replicas, name="Default", **extra):
    ds = {"replicas": list(replicas)}
    ds.update(extra)
    return {"version": 2, "datasets": {name: ds}}


def vol(address, weight=50, **extra):
    sl = {"label": "slice000", "weight": weight, "volume": {"address": address}}
    sl.update(extra)
    return sl


def rep(*slices, **extra):
    r = {"dimension": "_key", "slicer": "hash", "slices": list(slices)}
    r.update(extra)
    return r


CATALOGS = [
    json.loads((HERE.parent.parent / "examples" / "catalog.json").read_text()),
    catalog(rep(vol(f"{A}.000"), vol(f"{A}.001")), rep(vol(f"{B}.000"), vol(f"{B}.001"))),
    # several datasets: the joined strings sort, not the names alone
    {"version": 2, "datasets": {
        "b": {"replicas": [rep(vol("h2:1/t.0"))]},
        "A-B": {"replicas": [rep(vol("h1:1/t.0"))]},
        "A": {"replicas": [rep(vol("h3:1/t.0"), vol("h1:1/t.1"), vol("h3:1/t.2"))]}}},
    {"version": 2, "datasets": {}},
    catalog(),
    {"version": 2.0, "datasets": {"Default": {"replicas": [rep(vol("h:1/t.0"))]}}},
    # a replica may be a bare volume; volumes nest
    catalog({"address": "h9:1/t.000"},
            rep({"label": "s", "volume": {"replicas": [rep(vol("n2:5/t.0")),
                                                       {"address": "n1:5/t.x.y"}]}})),
    # the port as an integer; hosts with ':' and '/'; a tag without local name
    catalog(rep(vol("h:010031/droonga.000"), vol("a:b:7/x"), vol("p/q:8/r.s"),
                vol("[::1]:10031/droonga.000"))),
    catalog(rep(vol("h:1/t.0", weight=None), vol("h:2/t.0", weight=3))),
    catalog(rep(vol("h:1/t.0", weight=50.0))),          # raises: a float continuum
    catalog(rep(vol("h:1/t.0", weight=0))),             # raises: divided by 0
    catalog(rep(vol("h:1/t.0", weight=1.5), slicer="ordinal")),
    catalog(rep(vol("h:1/t.0", weight="x"))),           # raises
    catalog(rep(vol("nonsense"))),                      # raises: not an address
    catalog(rep(vol("h:1/t.0")), rep({"label": "s", "volume": {}})),  # raises: no volume type
    {"version": 2, "datasets": {"Default": {"nWorkers": 1}}},          # raises: no replicas
    {"version": 2},                                                    # raises: no datasets
    {"version": 3, "datasets": {}},                                    # raises
    {"version": "2", "datasets": {}},                                  # raises
    {"version": True, "datasets": {}},                                 # raises
    {"datasets": {}},                                                  # raises
    {"version": 2, "datasets": {"Default": {"replicas": {"a": 1}}}},   # raises
    {"version": 1, "effective_date": "2013-09-01T00:00:00Z",
     "zones": ["localhost:23003/test", "localhost:23004/test"],
     "farms": {"localhost:23003/test": {"device": "."}, "localhost:23004/test": {"device": "."}},
     "datasets": {"Test": {"workers": 0, "plugins": ["groonga"], "number_of_replicas": 2,
                           "number_of_partitions": 2, "partition_key": "_key",
                           "date_range": "infinity",
                           "ring": {"localhost:23041": {"weight": 50, "partitions": {
                               "2013-09-01": ["localhost:23003/test.000",
                                              "localhost:23004/test.000"]}},
                                    "localhost:23042": {"weight": 50, "partitions": {
                                        "2013-09-01": ["localhost:23003/test.001"]}}}},
                  "Other": {"workers": 0, "plugins": ["groonga"], "number_of_replicas": 1,
                            "number_of_partitions": 1, "partition_key": "_key",
                            "date_range": "infinity", "ring": {}}}},
]


def main(droonga_lib: str, stubs: str) -> None:
    cases = ([{"kind": "pretty", "input": v} for v in PRETTY]
             + [{"kind": "state", "input": {"cluster_id": CID, "members": m}} for m in STATES]
             + [{"kind": "state", "input": {"cluster_id": CID, "members": m}}
                for m in RAISING_STATES]
             + [{"kind": "catalog", "input": c} for c in CATALOGS])
    r = subprocess.run(["ruby", "-I", stubs, "-I", str(Path(droonga_lib) / "lib"),
                        str(HERE / "droonga11_reference.rb")],
                       input=json.dumps(cases).encode(), capture_output=True, check=True)
    doc = json.loads(r.stdout)
    doc["made_by"] = ("tests/vectors/make_droonga11_vectors.py: droonga-engine v1.1.1's own "
                      "code under Ruby")
    (HERE / "droonga11.json").write_text(json.dumps(doc, indent=1, ensure_ascii=True) + "\n")
    print(f"{len(doc['cases'])} cases; ruby {doc['ruby_version']}, json {doc['json_version']}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
