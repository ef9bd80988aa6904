"""Each layer's conftest marks and skips only its own directory's tests."""


def test_unit_items_are_marked_unit_and_not_skipped(request):
    assert request.node.get_closest_marker("unit") is not None
    assert request.node.get_closest_marker("skip") is None
    assert request.node.get_closest_marker("gpu") is None
    assert request.node.get_closest_marker("integration") is None
