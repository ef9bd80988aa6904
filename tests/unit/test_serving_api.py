"""The router client pickles by app name, so actors can carry it."""

import serving


def test_router_client_pickles_by_app_name():
    import pickle

    client = pickle.loads(pickle.dumps(serving.RouterClient("my-app")))
    assert client.app_name == "my-app"
