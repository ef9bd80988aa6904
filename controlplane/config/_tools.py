"""What a mission YAML declares about tools: Python function tools, MCP servers, and the acting fields of agents.

`AgentActing` holds the fields that join `AgentSpec`; `tool_problems()` is the cross-field check that joins the
mission's validation. Both work on any agent object with the same attribute names.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from controlplane.errors import SpecError

TOOL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
SERVER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$"
IMPORT_PATH_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"
BUILTIN_TOOL_NAMES = ("delegate", "memory.post", "memory.search")
GLOB_CHARS = frozenset("*?[")
ENV_REFERENCE = re.compile(r"\$\{([^}]*)\}")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CREDENTIAL_ENV_KEY = re.compile(r"(?i)(^|_)(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_KEY|PRIVATE_KEY)$")
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie"})

Approval = Literal["never", "required"]
AgentKind = Literal["llm", "python"]
ToolStyle = Literal["native", "constrained"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolResources(_Model):
    """Ray resources for a tool that runs as a Ray task (a GPU tool lands on a GPU node)."""

    num_cpus: float = Field(1.0, ge=0, description="Logical CPUs for the tool's Ray task.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs for the tool's Ray task; fractions such as 0.25 share one.")


class ToolDecl(_Model):
    """A Python function the agents may call, named by import path; its schema comes from its type hints."""

    name: str = Field(pattern=TOOL_NAME_PATTERN, description="The name agents and the model use, e.g. `calc`.")
    function: str = Field(pattern=IMPORT_PATH_PATTERN, description="Import path `package.module:function` of a "
                          "sync or async function with annotated parameters.")
    description: str | None = Field(None, description="Told to the model; default: the function's docstring.")
    timeout_s: float = Field(30.0, gt=0, le=3600, description="Wall time allowed per call.")
    resources: ToolResources | None = Field(None, description="Run each call as a Ray task with these resources; "
                                            "none: run in the agent's process.")
    approval: Approval = Field("never", description="`required`: each call waits for a human approval.")
    side_effects: bool = Field(False, description="The tool changes something outside the mission (files, "
                               "messages, tickets).")
    idempotent: bool = Field(True, description="Calling it twice with the same arguments does no more than once.")
    max_result_chars: int = Field(4000, ge=100, le=200_000, description="Results are clipped to this many "
                                  "characters before the model sees them.")


class McpServerDecl(_Model):
    """An MCP server, started once per mission; its tools appear as `<name>.<tool>`."""

    name: str = Field(pattern=SERVER_NAME_PATTERN, description="Prefix of its tools' names, e.g. `files`.")
    command: str | None = Field(None, description="stdio transport: the program to start, e.g. `python`.")
    args: list[str] = Field(default_factory=list, description="stdio transport: the program's arguments; "
                            "`${NAME}` in one is read from the MCP host's environment as the server starts.")
    env: dict[str, str] = Field(default_factory=dict, description="stdio transport: extra environment variables; "
                                "`${NAME}` in a value is read from the MCP host's environment as the server starts.")
    url: str | None = Field(None, pattern=r"^https?://", description="Streamable HTTP transport: the server's "
                            "endpoint, e.g. `http://127.0.0.1:8765/mcp`; `${NAME}` in it is read from the MCP host's "
                            "environment as it connects.")
    headers: dict[str, str] = Field(default_factory=dict, description="Streamable HTTP transport: extra headers; "
                                    "`${NAME}` in a value is read from the MCP host's environment as it connects.")
    startup_timeout_s: float = Field(30.0, gt=0, le=600, description="Time allowed to start and list its tools.")
    timeout_s: float = Field(30.0, gt=0, le=3600, description="Wall time allowed per tool call.")
    approval: Approval = Field("never", description="`required`: each call of its tools waits for an approval.")
    side_effects: bool = Field(False, description="Its tools change something outside the mission.")
    max_result_chars: int = Field(4000, ge=100, le=200_000, description="Results are clipped to this many "
                                  "characters before the model sees them.")

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerDecl:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of `command` (stdio) or `url` (streamable HTTP); this server has "
                             + ("both" if self.command else "neither"))
        if self.url is not None and (self.args or self.env):
            raise ValueError("`args` and `env` belong to a stdio server (`command`); remove them, or use `command`")
        if self.command is not None and self.headers:
            raise ValueError("`headers` belong to an HTTP server (`url`); remove them, or use `url`")
        self._with_references(_checked_reference)
        return self

    def resolved(self, environ: Mapping[str, str]) -> McpServerDecl:
        """This server with each `${NAME}` in its args, url, env and headers replaced by `environ[NAME]` (the secret
        stays out of the spec, and so out of the mission log). SpecError naming the first variable that is not set."""
        def resolve(path: str, value: str) -> str:
            for name in ENV_REFERENCE.findall(value):
                if name not in environ:
                    raise SpecError(where=f"mcp_servers({self.name}).{path}", value=value,
                                    why=f"${name} is not set where the MCP host runs",
                                    fix=f"export {name} before `controlplane run`, or set it in the cluster's "
                                    "environment (the job's runtime_env env_vars)")
            return ENV_REFERENCE.sub(lambda match: environ[match.group(1)], value)

        return self._with_references(resolve)

    def references(self) -> set[str]:
        """The names of the environment variables its values refer to."""
        names: set[str] = set()

        def collect(path: str, value: str) -> str:
            names.update(ENV_REFERENCE.findall(value))
            return value

        self._with_references(collect)
        return names

    def _with_references(self, replace: Callable[[str, str], str]) -> McpServerDecl:
        """A copy with `replace(path, value)` applied to every value that may hold references."""
        return self.model_copy(update={
            "args": [replace(f"args[{index}]", value) for index, value in enumerate(self.args)],
            "url": None if self.url is None else replace("url", self.url),
            "env": {key: replace(f"env.{key}", value) for key, value in self.env.items()},
            "headers": {key: replace(f"headers.{key}", value) for key, value in self.headers.items()}})


def _checked_reference(path: str, value: str) -> str:
    bad = [name for name in ENV_REFERENCE.findall(value) if not ENV_NAME.match(name)]
    if bad:
        raise ValueError(f"{path}: ${{{bad[0]}}} is not a reference to an environment variable; write ${{NAME}}, "
                         "with NAME of letters, digits and underscores")
    return value


class DelegationLimits(_Model):
    """Bounds on tasks that agents add with the `delegate` tool."""

    max_depth: int = Field(2, ge=0, le=10, description="Delegations in a chain: 1 lets a declared task delegate, "
                           "but not the child it created.")
    max_tasks: int = Field(50, ge=1, le=1000, description="Most tasks in the mission, declared and delegated.")


class AgentActing(_Model):
    """The fields an agent gains to act; they join `AgentSpec` unchanged."""

    kind: AgentKind = Field("llm", description="llm: the built-in tool-calling loop; python: your code "
                            "(`entrypoint`) with `async def run(task, ctx)`.")
    entrypoint: str | None = Field(None, pattern=IMPORT_PATH_PATTERN, description="For `kind: python`: "
                                   "`package.module:ClassOrFunction`.")
    tools: list[str] = Field(default_factory=list, description="The agent's allow-list: tool names or globs "
                             "(`files.*`), built-ins included (memory.search, memory.post, delegate).")
    max_steps: int = Field(8, ge=1, le=100, description="Model calls per task before the loop stops.")
    max_tool_calls: int = Field(16, ge=0, le=1000, description="Tool calls per task before the loop stops.")
    loop_repeat_limit: int = Field(3, ge=2, le=50, description="The same call (tool and arguments) this many "
                                   "times in one task ends the task as a loop.")
    tool_style: ToolStyle | None = Field(None, description="How the model expresses tool calls: native (OpenAI "
                                         "tool calling) or constrained (guided JSON); default: the model's "
                                         "setting in the serving config.")
    fixed_memory: bool = Field(False, description="Weak models: search memory with the task text before the "
                               "first call and post the answer after, as well as offering the memory tools.")

    @model_validator(mode="after")
    def _entrypoint_for_python(self) -> AgentActing:
        if (self.kind == "python") != (self.entrypoint is not None):
            raise ValueError(f"`kind: python` needs `entrypoint` and only it may have one "
                             f"(kind={self.kind!r}, entrypoint={self.entrypoint!r})")
        return self


def is_glob(pattern: str) -> bool:
    return any(char in GLOB_CHARS for char in pattern)


def tool_problems(*, agents: Sequence[Any], tools: Sequence[ToolDecl],
                  mcp_servers: Sequence[McpServerDecl]) -> Iterator[SpecError]:
    """Each bad tool name or allow-list entry, as a SpecError (where = YAML path).

    `agents` need `.name` and `.tools`. MCP tool names are known only once a server runs, so `<server>.<x>`
    passes here and is checked again after the server lists its tools.
    """
    declared = yield from _declared_names(tools, mcp_servers)
    yield from _literal_credentials(mcp_servers)
    servers = [server.name for server in mcp_servers]
    known = sorted(declared) + [f"{server}.*" for server in servers]
    for i, agent in enumerate(agents):
        for j, entry in enumerate(agent.tools):
            if not _names_a_tool(entry, declared, servers):
                yield SpecError(where=f"agents[{i}]({agent.name}).tools[{j}]", value=entry,
                                why=f"it names no tool; known tools: {', '.join(known)}",
                                fix="use a known name or a glob that matches one, or declare the tool under "
                                    "`tools:` or its server under `mcp_servers:`")
        if any(fnmatch.fnmatchcase("delegate", entry) for entry in agent.tools) and len(agents) < 2:
            yield SpecError(where=f"agents[{i}]({agent.name}).tools", value="delegate",
                            why="there is no other agent to delegate to", fix="add an agent, or remove `delegate`")


def _declared_names(tools: Sequence[ToolDecl],
                    mcp_servers: Sequence[McpServerDecl]) -> Generator[SpecError, None, set[str]]:
    names = set(BUILTIN_TOOL_NAMES)
    for i, tool in enumerate(tools):
        if tool.name in names:
            why = "it is a built-in tool" if tool.name in BUILTIN_TOOL_NAMES else "two tools have that name"
            yield SpecError(where=f"tools[{i}].name", value=tool.name, why=why, fix="rename the tool")
        names.add(tool.name)
    prefixes = {name.split(".", 1)[0] for name in names if "." in name}
    servers: set[str] = set()
    for i, server in enumerate(mcp_servers):
        if server.name in servers or server.name in prefixes:
            yield SpecError(where=f"mcp_servers[{i}].name", value=server.name,
                            why="another server or tool already uses that prefix (its tools are "
                                f"`{server.name}.<tool>`)", fix="rename the server")
        servers.add(server.name)
    return names


def _literal_credentials(mcp_servers: Sequence[McpServerDecl]) -> Iterator[SpecError]:
    """Where a server's declaration passes a credential, it must pass a `${NAME}` reference: the spec is written to
    the mission log. The error does not repeat the value."""
    for i, server in enumerate(mcp_servers):
        for path, value in credential_values(server.model_dump()):
            if value and not ENV_REFERENCE.search(value):
                yield SpecError(where=f"mcp_servers[{i}]({server.name}).{path}", value="<a literal, not shown>",
                                why="it holds a credential, and the mission's spec is written to its log",
                                fix="export the credential where the MCP host runs and write a reference, e.g. "
                                    "`${GITHUB_TOKEN}` or `Bearer ${SEARCH_TOKEN}`")


def credential_values(server: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(path, value) of each place in an MCP server's declaration (a dict, as written) that passes a credential:
    an env var or header named as one, the value of a `--token`-like argument, and a URL's password or
    credential-named query parameter, in `url` or in an argument."""
    for key, value in _str_items(server.get("env")):
        if CREDENTIAL_ENV_KEY.search(key):
            yield f"env.{key}", value
    for key, value in _str_items(server.get("headers")):
        if key.lower() in CREDENTIAL_HEADERS:
            yield f"headers.{key}", value
    args = server.get("args")
    args = [arg if isinstance(arg, str) else "" for arg in args] if isinstance(args, list) else []
    for index, arg in enumerate(args):
        flag, equals, inline = arg.partition("=")
        if flag.startswith("-") and CREDENTIAL_ENV_KEY.search(flag.lstrip("-").replace("-", "_")):
            if equals:
                yield f"args[{index}]", inline
            elif index + 1 < len(args) and not args[index + 1].startswith("-"):
                yield f"args[{index + 1}]", args[index + 1]
        else:
            yield from ((f"args[{index}]", value) for value in _url_credentials(arg))
    url = server.get("url")
    yield from (("url", value) for value in _url_credentials(url if isinstance(url, str) else ""))


def _str_items(mapping: Any) -> list[tuple[str, str]]:
    if not isinstance(mapping, dict):
        return []
    return [(key, value) for key, value in mapping.items() if isinstance(key, str) and isinstance(value, str)]


def _url_credentials(text: str) -> list[str]:
    """A URL's password and the values of its query parameters named as credentials (`?api_key=...`)."""
    if "://" not in text:
        return []
    try:
        parts = urlsplit(text)
        password = parts.password
    except ValueError:
        return []
    named = [value for name, value in parse_qsl(parts.query) if CREDENTIAL_ENV_KEY.search(name.replace("-", "_"))]
    return ([password] if password else []) + named


def _names_a_tool(entry: str, declared: set[str], servers: list[str]) -> bool:
    if not is_glob(entry):
        return entry in declared or ("." in entry and entry.split(".", 1)[0] in servers)
    if any(fnmatch.fnmatchcase(name, entry) for name in declared):
        return True
    head = entry.split(".", 1)[0]
    return any(fnmatch.fnmatchcase(server, head) for server in servers)
