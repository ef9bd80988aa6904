"""The public names of `serving` are pinned: a new one shows up in review."""

import serving


def test_public_names():
    assert serving.__all__ == [
        "ChatMessage", "ChatRequest", "ChatResult", "Identity", "RouterClient", "ServingConfig", "Usage",
        "app_builder", "build_app", "deploy", "load_serving_config",
    ]
    assert serving.__all__ == sorted(serving.__all__)


def test_router_client_pickles_by_app_name():
    import pickle

    client = pickle.loads(pickle.dumps(serving.RouterClient("my-app")))
    assert client.app_name == "my-app"
