"""A small valid mission as a dict, for unit tests to copy and break."""

import copy


def mission(**changes):
    data = {
        "name": "launch",
        "goal": "Launch a product",
        "agents": [
            {"name": "writer", "role": "copywriter", "tools": ["memory.search", "memory.post"]},
            {"name": "checker", "role": "reviewer"},
            {"name": "checker2", "role": "reviewer"},
        ],
        "tasks": [
            {"id": "draft", "description": "Write a draft", "agent": "writer"},
            {"id": "review", "description": "Review the draft", "role": "reviewer", "depends_on": ["draft"]},
            {"id": "final", "description": "Finalise", "agent": "writer", "depends_on": ["review"]},
        ],
    }
    data = copy.deepcopy(data)
    data.update(changes)
    return data
