"""core.records: a record behaves as the namedtuple it replaces, in every way the code uses."""

from __future__ import annotations

import collections
import copy
import pickle

import pytest

from membership_log.core.incidents import Incident
from membership_log.core.records import record

Point = record("Point", "x y label", defaults=("origin",))
Twin = collections.namedtuple("Twin", "x y label", defaults=("origin",))


def test_a_record_is_built_and_read_as_a_namedtuple_is():
    for cls in (Point, Twin):
        p = cls(1, y=2)
        assert p == (1, 2, "origin") and hash(p) == hash((1, 2, "origin"))
        assert (p.x, p.y, p.label) == (1, 2, "origin") and p[1] == 2
        assert cls._fields == ("x", "y", "label")
        assert cls._field_defaults == {"label": "origin"}
        assert p._replace(label="far") == (1, 2, "far")
        assert p._asdict() == {"x": 1, "y": 2, "label": "origin"}
        assert cls._make([3, 4, "z"]) == (3, 4, "z")
        assert isinstance(p, tuple) and copy.copy(p) == p
        match p:
            case cls(x, y, label):
                assert (x, y, label) == (1, 2, "origin")
    assert repr(Point(1, 2)) == "Point(x=1, y=2, label='origin')"
    assert repr(Twin(1, 2)) == "Twin(x=1, y=2, label='origin')"


def test_wrong_arguments_fail_as_they_would_for_a_namedtuple():
    with pytest.raises(TypeError):
        Point(1, 2, 3, 4)
    with pytest.raises(TypeError):
        Point(1)
    with pytest.raises(TypeError):
        Point(1, 2, z=3)
    with pytest.raises(TypeError):
        Point._make([1, 2])
    with pytest.raises(TypeError):
        Point(1, 2)._replace(z=3)
    with pytest.raises(AttributeError):
        Point(1, 2).x = 5  # immutable, and no __dict__
    with pytest.raises(ValueError):
        record("Wide", " ".join(f"f{i}" for i in range(11)))
    for bad in ("x _cls", "x _tuple_new", "x x", "x class", "x 1y"):
        with pytest.raises(ValueError):
            record("Bad", bad)


def test_records_of_the_package_survive_pickle_as_worker_processes_need():
    inc = Incident("n1", 1, 2, "failed", ("a",), 3, 4)
    back = pickle.loads(pickle.dumps(inc))
    assert back == inc and type(back) is Incident and back.observers == ("a",)
    assert Incident.__module__ == "membership_log.core.incidents"

