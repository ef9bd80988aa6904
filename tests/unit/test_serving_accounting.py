from serving._accounting import Ledger


def test_totals_per_mission_agent_model():
    ledger = Ledger()
    ledger.record("m1", "a", "default", prompt_tokens=10, completion_tokens=5, ttft_s=0.1, latency_s=0.5)
    ledger.record("m1", "a", "default", prompt_tokens=20, completion_tokens=7, ttft_s=0.2, latency_s=0.6)
    ledger.record("m1", "b", "scripted", prompt_tokens=1, completion_tokens=1, ttft_s=0.0, latency_s=0.0)
    ledger.record_error("m2", "a", "default")
    rows = {(r["mission_id"], r["agent_id"], r["model"]): r for r in ledger.snapshot()}
    assert rows[("m1", "a", "default")]["calls"] == 2
    assert rows[("m1", "a", "default")]["prompt_tokens"] == 30
    assert rows[("m1", "a", "default")]["completion_tokens"] == 12
    assert rows[("m2", "a", "default")]["errors"] == 1
    assert [r["agent_id"] for r in ledger.snapshot("m1")] == ["a", "b"]
