from controlplane._core.conflicts import (
    Finding,
    backoff_s,
    decide_majority,
    decide_priority,
    decide_resolver,
    resolver_task,
)

OLD = Finding(agent="researcher", role="market researcher", text="Launch in May")
NEW = Finding(agent="legal", role="legal reviewer", text="Launch in October")


def test_backoff_doubles_and_caps():
    assert [backoff_s(n, base_s=0.5, max_s=3) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3, 3]


def test_priority_by_role_and_ties_keep_existing():
    d = decide_priority("launch date", OLD, NEW, ["legal reviewer", "market researcher"])
    assert (d.winner, d.text, d.policy) == ("legal", "Launch in October", "priority")
    assert "'legal reviewer' ranks above 'market researcher'" in d.reason
    tie = decide_priority("launch date", OLD, NEW, [])
    assert tie.winner == "researcher" and "rank equally" in tie.reason


def test_majority_counts_agents_on_each_side_and_ties_fall_back_to_priority():
    d = decide_majority("launch date", OLD, NEW, {"copy": "existing", "seo": "existing", "design": "new"},
                        ["legal reviewer"])
    assert d.winner == "researcher" and d.reason.startswith("3 agents ['copy', 'researcher', 'seo']")
    tie = decide_majority("launch date", OLD, NEW, {}, ["legal reviewer"])
    assert tie.winner == "legal" and tie.reason.startswith("tie 1-1")


def test_resolver_task_names_both_sides_and_decision_keeps_synthesis():
    text = resolver_task("launch date", OLD, NEW)
    assert "Launch in May" in text and "Launch in October" in text and "researcher" in text
    d = decide_resolver("launch date", OLD, NEW, resolver="editor", synthesis="Launch in Q3")
    assert d.winner is None and d.text == "Launch in Q3" and "'editor'" in d.reason
    assert d.to_dict()["agents"] == ["researcher", "legal"]


def test_assign_sides_uses_the_closer_finding_and_ignores_exact_ties():
    from controlplane._core.conflicts import assign_sides

    assert assign_sides({"a": (0.9, 0.2), "b": (0.1, 0.7), "c": (0.5, 0.5)}) == {"a": "existing", "b": "new"}
