"""The README's memory example runs as written (on the shared test cluster instead of a new one)."""

import re
from pathlib import Path

import ray

from tests.helpers import wait_for

README = Path(__file__).resolve().parents[2] / "README.md"


def memory_example() -> str:
    text = README.read_text()
    section = text[text.index("<!-- section:memory -->"):text.index("<!-- /section:memory -->")]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_memory_example_runs(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ray, "init", lambda *a, **k: None)  # the session cluster is already up
    scope: dict = {}
    try:
        exec(compile(memory_example(), "README.md:memory", "exec"), scope)
        assert [r.id for r in scope["receipts"]] == [1, 2]
        assert scope["hits"][0][0].entry.text == "The launch is planned for May."
        events = wait_for(lambda: ray.get(scope["inbox"].received.remote()), what="the launch event")
        assert [e.entry.topic for e in events] == ["launch"]
        assert (tmp_path / "runs/demo/memory").is_dir()
    finally:
        for name in ("demo:memory", "inbox"):
            ray.kill(ray.get_actor(name))
