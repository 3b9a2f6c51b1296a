"""Time arguments: every accepted form, and bad ones rejected with the forms named."""

import pytest

from membership_log.core.timespec import ACCEPTED, iso, parse, reached, to_us

NOW = to_us(__import__("datetime").datetime(2026, 11, 25, 12, 0, 0))


@pytest.mark.parametrize("text,expected", [
    ("now", NOW),
    ("15m ago", NOW - 15 * 60_000_000),
    ("2h ago", NOW - 2 * 3600_000_000),
    ("3d ago", NOW - 3 * 86400_000_000),
    ("30s ago", NOW - 30_000_000),
    ("2026-11-25T03:12:00", NOW - (8 * 3600 + 48 * 60) * 1_000_000),   # no zone = UTC
    ("2026-11-25T03:12:00Z", NOW - (8 * 3600 + 48 * 60) * 1_000_000),
    ("2026-11-25T12:12:00+09:00", NOW - (8 * 3600 + 48 * 60) * 1_000_000),
    ("2026-11-25 03:12:00.5", NOW - (8 * 3600 + 48 * 60) * 1_000_000 + 500_000),
])
def test_accepted_forms(text, expected):
    p = parse(text, NOW)
    assert p.us == expected and p.seq is None


def test_event_number():
    p = parse("@42", NOW)
    assert (p.seq, p.us) == (42, None)
    assert reached(p, 42, 10**18) and not reached(p, 43, 0)


@pytest.mark.parametrize("bad", ["yesterday", "@", "@x", "5 parsecs ago", "m ago", "",
                                 "2026-13-01"])
def test_bad_times_name_the_accepted_forms(bad):
    with pytest.raises(ValueError) as e:
        parse(bad, NOW)
    assert ACCEPTED in str(e.value)


def test_iso_round_trip():
    assert iso(NOW + 5) == "2026-11-25T12:00:00.000005Z"
    assert parse(iso(NOW + 5), 0).us == NOW + 5
