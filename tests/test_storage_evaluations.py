"""The evaluations a study keeps, on every storage: each opening of the test part is counted
before it happens, and completed with its result and model."""

from __future__ import annotations

from netrace.storage import EpochValue, Storage


def test_openings_are_counted_and_completed(storage_url: str) -> None:
    s = Storage(storage_url)
    st = s.create_study("study", direction="maximize", config={})
    other = s.create_study("other", direction="maximize", config={})
    [t] = s.add_trials(st.id, [{"lr": 0.1}], [1])
    s.record_epoch(None, [EpochValue(t.id, 0, 0.5), EpochValue(t.id, 1, 0.6)])
    assert s.evaluations(st.id) == []
    first = s.open_evaluation(st.id)
    [e] = s.evaluations(st.id)
    assert (e.id, e.result, e.epochs_spent) == (first, None, 2)  # counted, not complete
    assert s.evaluation_model(first) is None
    s.complete_evaluation(first, {"verdict": "v", "openings": 1}, b"\x00model\xff")
    second = s.open_evaluation(st.id)
    got = s.evaluations(st.id)
    assert [g.id for g in got] == [first, second]
    assert got[0].result == {"verdict": "v", "openings": 1} and got[1].result is None
    assert s.evaluation_model(first) == b"\x00model\xff"
    assert s.evaluations(other.id) == []
    # another connection (another process) reads the same
    again = Storage(storage_url)
    assert [g.result for g in again.evaluations(st.id)] == [g.result for g in got]
