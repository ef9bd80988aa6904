from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from controlplane.config._tools import AgentActing, McpServerDecl, ToolDecl, tool_problems
from controlplane.errors import SpecError

CALC = ToolDecl(name="calc", function="controlplane.builtin_tools:calculator")
FILES = McpServerDecl(name="files", command="python", args=["-m", "files_server"])


def agent(name: str, *tools: str) -> SimpleNamespace:
    return SimpleNamespace(name=name, tools=list(tools))


def check_tools(**declared) -> None:
    """The tool problems as a mission's validation raises them: one SpecError, the first problem's fields."""
    problems = list(tool_problems(**declared))
    if problems:
        raise SpecError.of(problems)


def test_tool_declarations_are_strict():
    assert CALC.resources is None and CALC.approval == "never" and CALC.max_result_chars == 4000
    for bad in ({"name": "calc", "function": "no_colon"}, {"name": "calc", "function": "m:f", "timeout": 3},
                {"name": "bad name", "function": "m:f"}, {"name": "calc", "function": "m:f", "approval": "maybe"}):
        with pytest.raises(ValidationError):
            ToolDecl.model_validate(bad)


def test_an_mcp_server_has_exactly_one_transport():
    assert McpServerDecl(name="web", url="http://127.0.0.1:8765/mcp").command is None
    for bad, why in (({"name": "x"}, "exactly one of `command`"),
                     ({"name": "x", "command": "p", "url": "http://h/mcp"}, "exactly one of `command`"),
                     ({"name": "x", "url": "http://h/mcp", "args": ["a"]}, "belong to a stdio server"),
                     ({"name": "x", "command": "p", "headers": {"a": "b"}}, "belong to an HTTP server"),
                     ({"name": "x.y", "command": "p"}, "pattern")):
        with pytest.raises(ValidationError, match=why):
            McpServerDecl.model_validate(bad)


def test_an_mcp_servers_args_url_env_and_headers_read_their_references_from_the_hosts_environment():
    github = McpServerDecl(name="gh", command="python", env={"GITHUB_TOKEN": "${GH_TOKEN}", "MODE": "read"},
                           args=["-m", "pg_server", "postgresql://app:${DB_PASSWORD}@db/app"])
    web = McpServerDecl(name="web", url="http://h/mcp?team=${TEAM}", headers={"Authorization": "Bearer ${WEB_TOKEN}"})
    environ = {"GH_TOKEN": "ghp-1", "WEB_TOKEN": "w-2", "DB_PASSWORD": "pw", "TEAM": "growth"}
    assert github.resolved(environ).env == {"GITHUB_TOKEN": "ghp-1", "MODE": "read"}
    assert github.resolved(environ).args == ["-m", "pg_server", "postgresql://app:pw@db/app"]
    assert web.resolved(environ).headers == {"Authorization": "Bearer w-2"}
    assert web.resolved(environ).url == "http://h/mcp?team=growth"
    assert github.references() == {"GH_TOKEN", "DB_PASSWORD"} and web.references() == {"TEAM", "WEB_TOKEN"}
    assert github.env["GITHUB_TOKEN"] == "${GH_TOKEN}"  # the spec, and so the mission log, keeps the reference
    with pytest.raises(SpecError, match=r"mcp_servers\(web\)\.headers\.Authorization.*\$WEB_TOKEN is not set.*export "
                       "WEB_TOKEN"):
        web.resolved({"TEAM": "growth"})
    with pytest.raises(ValidationError, match=r"env\.A: \$\{GH TOKEN\} is not a reference"):
        McpServerDecl(name="gh", command="python", env={"A": "${GH TOKEN}"})
    with pytest.raises(ValidationError, match=r"args\[1\]: \$\{\} is not a reference"):
        McpServerDecl(name="gh", command="python", args=["-m", "x${}"])


def test_a_literal_credential_in_an_mcp_servers_env_or_headers_is_refused_without_repeating_it():
    for server, where in ((McpServerDecl(name="gh", command="p", env={"GITHUB_PERSONAL_ACCESS_TOKEN": "ghp-1"}),
                           "mcp_servers[0](gh).env.GITHUB_PERSONAL_ACCESS_TOKEN"),
                          (McpServerDecl(name="web", url="http://h/mcp", headers={"authorization": "Bearer w-2"}),
                           "mcp_servers[0](web).headers.authorization")):
        with pytest.raises(SpecError, match=r"holds a credential.*Fix: export") as caught:
            check_tools(agents=[], tools=[], mcp_servers=[server])
        assert caught.value.where == where and "ghp-1" not in str(caught.value) and "w-2" not in str(caught.value)
    references = McpServerDecl(name="gh", command="p", env={"GITHUB_TOKEN": "${GH}", "PASSWORD_FILE": "/run/pw",
                                                            "MAX_TOKENS": "100", "TOKENIZERS_PARALLELISM": "false"})
    check_tools(agents=[], tools=[], mcp_servers=[references])  # references, and keys that name no credential
    from controlplane import parse_mission

    with pytest.raises(SpecError, match=r"env\.GITHUB_TOKEN: '<a literal, not shown>' is invalid"):
        parse_mission({"name": "m", "goal": "g", "agents": [{"name": "a", "role": "r", "tools": ["gh.*"]}],
                       "tasks": [{"id": "t", "agent": "a", "description": "d"}],
                       "mcp_servers": [{"name": "gh", "command": "p", "env": {"GITHUB_TOKEN": "ghp-1"}}]})


@pytest.mark.parametrize(("declared", "where"), [
    ({"command": "p", "args": ["--api-key", "sk-1"]}, "args[1]"),
    ({"command": "p", "args": ["-m", "srv", "--access-token=sk-1"]}, "args[2]"),
    ({"command": "p", "args": ["postgresql://app:sk-1@db/app"]}, "args[0]"),
    ({"url": "https://h/mcp?team=growth&api_key=sk-1"}, "url"),
    ({"url": "https://app:sk-1@h/mcp"}, "url"),
])
def test_a_literal_credential_in_an_mcp_servers_args_or_url_is_refused_without_repeating_it(declared, where):
    with pytest.raises(SpecError, match=r"holds a credential.*Fix: export") as caught:
        check_tools(agents=[], tools=[], mcp_servers=[McpServerDecl(name="s", **declared)])
    assert caught.value.where == f"mcp_servers[0](s).{where}" and "sk-1" not in str(caught.value)


def test_arguments_and_urls_that_pass_no_literal_credential_are_accepted():
    for declared in ({"command": "p", "args": ["--api-key", "${KEY}", "--token=${T}", "--max-tokens", "100",
                                               "--password-file", "/run/pw", "--token", "--verbose"]},
                     {"command": "p", "args": ["postgresql://app:${DB_PASSWORD}@db/app", "http://[bad", "https://h/x"]},
                     {"url": "https://h/mcp?team=growth&access_token=${T}&max_tokens=9"}):
        check_tools(agents=[], tools=[], mcp_servers=[McpServerDecl(name="s", **declared)])


def test_a_spec_error_on_an_mcp_server_quotes_it_without_the_values_that_may_hold_its_credentials():
    from controlplane import parse_mission

    with pytest.raises(SpecError, match=r"exactly one of `command`") as caught:
        parse_mission({"name": "m", "goal": "g", "agents": [{"name": "a", "role": "r"}],
                       "tasks": [{"id": "t", "agent": "a", "description": "d"}],
                       "mcp_servers": [{"name": "gh", "command": "p", "url": "http://h/mcp",
                                        "headers": {"Authorization": "Bearer ghp-1"}}]})
    assert caught.value.value["headers"] == {"Authorization": "<not shown>"} and "ghp-1" not in str(caught.value)
    with pytest.raises(SpecError, match=r"exactly one of `command`") as caught:
        parse_mission({"name": "m", "goal": "g", "agents": [{"name": "a", "role": "r"}],
                       "tasks": [{"id": "t", "agent": "a", "description": "d"}],
                       "mcp_servers": [{"name": "gh", "command": "p", "args": ["-m", "srv", "--token", "ghp-1"],
                                        "url": "https://app:ghp-2@h/mcp"}]})
    assert caught.value.value["args"] == ["-m", "srv", "--token", "<not shown>"]
    assert caught.value.value["url"] == "<not shown>" and "ghp-" not in str(caught.value)


def test_agent_acting_fields():
    assert AgentActing().kind == "llm" and AgentActing().max_steps == 8
    assert AgentActing(kind="python", entrypoint="pkg.mod:Agent").entrypoint == "pkg.mod:Agent"
    with pytest.raises(ValidationError, match="`kind: python` needs `entrypoint`"):
        AgentActing(kind="python")
    with pytest.raises(ValidationError, match="`kind: python` needs `entrypoint`"):
        AgentActing(entrypoint="pkg.mod:Agent")
    with pytest.raises(ValidationError):
        AgentActing(loop_repeat_limit=1)


def test_allow_lists_name_known_tools_builtins_globs_and_mcp_namespaces():
    check_tools(agents=[agent("a", "calc", "memory.*", "files.read", "files.*", "delegate"), agent("b", "*")],
                tools=[CALC], mcp_servers=[FILES])


@pytest.mark.parametrize(("tools", "value"), [(("calculator",), "calculator"), (("web.*",), "web.*"),
                                              (("filesread",), "filesread")])
def test_an_unknown_tool_in_an_allow_list_names_the_agent_entry_and_the_known_tools(tools, value):
    with pytest.raises(SpecError) as caught:
        check_tools(agents=[agent("writer", *tools)], tools=[CALC], mcp_servers=[FILES])
    message = str(caught.value)
    assert message.startswith(f"agents[0](writer).tools[0]: {value!r} is invalid: it names no tool")
    assert "known tools: calc, delegate, memory.post, memory.search, files.*" in message and "Fix: " in message


def test_tool_and_server_names_may_not_collide():
    with pytest.raises(SpecError, match=r"tools\[0\].name: 'memory.search' .* it is a built-in tool"):
        check_tools(agents=[], tools=[ToolDecl(name="memory.search", function="m:f")], mcp_servers=[])
    with pytest.raises(SpecError, match=r"tools\[1\].name: 'calc' .* two tools have that name"):
        check_tools(agents=[], tools=[CALC, CALC], mcp_servers=[])
    with pytest.raises(SpecError, match=r"mcp_servers\[0\].name: 'memory'"):
        check_tools(agents=[], tools=[], mcp_servers=[McpServerDecl(name="memory", command="p")])


def test_delegate_needs_another_agent():
    with pytest.raises(SpecError, match="no other agent to delegate to"):
        check_tools(agents=[agent("solo", "delegate")], tools=[], mcp_servers=[])
