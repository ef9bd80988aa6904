from controlplane._core.dag import Dag
from controlplane.config._graph import format_cycle


def test_find_cycle_returns_the_closed_path():
    dag = Dag({"a": [], "b": ["a", "d"], "c": ["b"], "d": ["c"]})
    cycle = dag.find_cycle()
    assert cycle[0] == cycle[-1] and set(cycle) == {"b", "c", "d"}
    assert format_cycle(["a", "b", "a"]) == "a -> b -> a"
    assert Dag({"a": [], "b": ["a"]}).find_cycle() is None
    assert Dag({"a": ["a"]}).find_cycle() == ["a", "a"]


def test_order_descendants_width_and_critical_path():
    dag = Dag({"plan": [], "x": ["plan"], "y": ["plan"], "z": ["plan"], "join": ["x", "y", "z"], "pub": ["join"]})
    assert dag.topological_order() == ["plan", "x", "y", "z", "join", "pub"]
    assert dag.descendants("x") == ["join", "pub"]
    assert dag.width() == 3
    durations = {"plan": 1.0, "x": 2.0, "y": 5.0, "z": 1.0, "join": 1.0, "pub": 0.5}
    assert dag.critical_path_s(durations) == 7.5


def test_slack_is_zero_on_the_critical_path_and_the_spare_time_elsewhere():
    dag = Dag({"a": [], "b": ["a"], "c": ["b"], "short": [], "join": ["c", "short"]})
    slack = dag.slack({"a": 1.0, "b": 1.0, "c": 1.0, "short": 1.0, "join": 1.0})
    assert slack == {"a": 0.0, "b": 0.0, "c": 0.0, "short": 2.0, "join": 0.0}
