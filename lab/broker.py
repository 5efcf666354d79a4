"""The lab's terminal-server broker: a WS-Management endpoint that pywinrm reaches over HTTPS.

No WinRM server runs on Linux, so this is the lab's one stand-in. It speaks the real protocol
(SOAP over HTTP(S), Basic authentication, Create/Command/Receive/Signal/Delete on a cmd shell) and
runs `powershell -encodedcommand` scripts through a small interpreter that knows the few RDS cmdlets
the migration calls, keeping their state in a JSON file:

    Get-RDSessionCollection
    Get-RDSessionCollectionConfiguration -CollectionName 'X' -UserGroup
    Set-RDSessionCollectionConfiguration -CollectionName 'X' -UserGroup @('D\\u1', 'D\\u2')
    Get-RDUserSession [| Where-Object UserName -eq 'D\\u']
    Invoke-RDUserLogoff -HostServer 'h' -UnifiedSessionID 5 -Force
    ... | ConvertTo-Json [-Compress] [-Depth N]

Strings must be single-quoted literals ('' escapes a quote; ‘ ’ ‚ ‛ count as quotes, as in
PowerShell) or double-quoted without `$` or a backtick: anything that would expand or escape in
real PowerShell is refused, as a script built with unsafe quoting would be dangerous on a real broker.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import ssl
import threading
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
}
SHELL = NS["rsp"]
DONE = f"{SHELL}/CommandState/Done"


class ScriptError(Exception):
    """A PowerShell script the emulator refuses or a cmdlet that fails; becomes stderr and exit 1."""


# --- a tiny PowerShell subset -------------------------------------------------------------------

TOKEN = re.compile(
    r"""\s*(?:
        (?P<sq>['\u2018\u2019\u201a\u201b](?:[^'\u2018\u2019\u201a\u201b]|['\u2018\u2019\u201a\u201b]{2})*['\u2018\u2019\u201a\u201b])
      | (?P<dq>"[^"]*")
      | (?P<arr>@\()
      | (?P<punct>[(),|;\n])
      | (?P<param>-[A-Za-z][A-Za-z0-9]*)
      | (?P<num>\d+)
      | (?P<word>[A-Za-z$][A-Za-z0-9_.:\\-]*)
      | (?P<assign>=)
    )""",
    re.VERBOSE,
)


SQ_PAIR = re.compile("(['\u2018\u2019\u201a\u201b])['\u2018\u2019\u201a\u201b]")  # PowerShell: any two quotes make one


def tokenize(script: str) -> list[tuple[str, str]]:
    """Split a script into (kind, text) tokens; refuse anything outside the subset."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = script.replace("\r\n", "\n")
    while pos < len(text):
        if text[pos] in " \t":
            pos += 1
            continue
        m = TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ScriptError(f"unsupported syntax at: {text[pos : pos + 20]!r}")
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "dq" and ("$" in value or "`" in value):
            raise ScriptError("double-quoted strings with $ or ` are refused (would expand)")
        if kind == "sq":
            kind, value = "str", SQ_PAIR.sub(r"\1", value[1:-1])
        elif kind == "dq":
            kind, value = "str", value[1:-1]
        tokens.append((kind, value))
        pos = m.end()
    return tokens


@dataclass
class Command:
    """One cmdlet call: its name, named parameters and switches."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    positional: list[Any] = field(default_factory=list)


def parse(script: str) -> list[list[Command]]:
    """Parse a script into statements, each a pipeline of commands."""
    tokens = tokenize(script)
    statements: list[list[Command]] = []
    pipeline: list[Command] = []
    i = 0

    def value_at(j: int) -> tuple[Any, int]:
        kind, text = tokens[j]
        if kind == "str":
            return text, j + 1
        if kind == "num":
            return int(text), j + 1
        if kind == "arr":
            items: list[Any] = []
            j += 1
            while tokens[j][1] != ")":
                if tokens[j][1] == ",":
                    j += 1
                    continue
                item, j = value_at(j)
                items.append(item)
            return items, j + 1
        if kind == "word" and not text.startswith("$"):
            return text, j + 1
        raise ScriptError(f"unsupported value {text!r}")

    while i < len(tokens):
        kind, text = tokens[i]
        if text in (";", "\n"):
            if pipeline:
                statements.append(pipeline)
            pipeline = []
            i += 1
            continue
        if kind == "word" and text.startswith("$"):
            # `$ErrorActionPreference = 'Stop'` is accepted and has no effect here
            if text != "$ErrorActionPreference" or tokens[i + 1][0] != "assign":
                raise ScriptError(f"variables are not supported: {text}")
            i += 3
            continue
        if kind != "word":
            raise ScriptError(f"expected a cmdlet name, got {text!r}")
        cmd = Command(text)
        i += 1
        while i < len(tokens) and tokens[i][1] not in ("|", ";", "\n"):
            k, t = tokens[i]
            if k == "param":
                name = t[1:].lower()
                if i + 1 < len(tokens) and tokens[i + 1][0] in ("str", "num", "arr"):
                    cmd.params[name], i = value_at(i + 1)
                else:
                    cmd.params[name] = True
                    i += 1
            else:
                v, i = value_at(i)
                cmd.positional.append(v)
        pipeline.append(cmd)
        if i < len(tokens) and tokens[i][1] == "|":
            i += 1
    if pipeline:
        statements.append(pipeline)
    return statements


class BrokerState:
    """Session collections and user sessions, persisted to a JSON file after every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, self.path)

    def collection(self, name: str) -> dict[str, Any]:
        found = self.data["collections"].get(name)
        if found is None:
            raise ScriptError(f"Get-RDSessionCollection : collection '{name}' does not exist")
        return dict(found)

    def run(self, script: str) -> str:
        """Run a script; return its stdout text."""
        out: list[str] = []
        with self.lock:
            for pipeline in parse(script):
                result: Any = None
                for cmd in pipeline:
                    result = self.call(cmd, result)
                if result is not None:
                    out.append(result if isinstance(result, str) else json.dumps(result, ensure_ascii=False))
        return "\n".join(out)

    def call(self, cmd: Command, piped: Any) -> Any:
        name, p = cmd.name.lower(), cmd.params
        collections = self.data["collections"]
        if name == "get-rdsessioncollection":
            return [{"CollectionName": n, "Hosts": c["hosts"]} for n, c in collections.items()]
        if name == "get-rdsessioncollectionconfiguration":
            c = self.collection(p["collectionname"])
            return {"CollectionName": p["collectionname"], "UserGroup": c["users"]}
        if name == "set-rdsessioncollectionconfiguration":
            self.collection(p["collectionname"])
            groups = p.get("usergroup")
            if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
                raise ScriptError("Set-RDSessionCollectionConfiguration : -UserGroup takes @('...', ...)")
            collections[p["collectionname"]]["users"] = sorted(set(groups), key=str.lower)
            self.save()
            return None
        if name == "get-rdusersession":
            return [
                {
                    "UnifiedSessionId": s["id"],
                    "UserName": s["user"],
                    "HostServer": s["host"],
                    "SessionState": s["state"],
                }
                for s in self.data["sessions"]
            ]
        if name == "invoke-rduserlogoff":
            sid, host = p.get("unifiedsessionid"), p.get("hostserver")
            before = len(self.data["sessions"])
            self.data["sessions"] = [s for s in self.data["sessions"] if not (s["id"] == sid and s["host"] == host)]
            if len(self.data["sessions"]) == before:
                raise ScriptError(f"Invoke-RDUserLogoff : no session {sid} on {host}")
            self.save()
            return None
        if name == "where-object":
            if len(cmd.positional) != 1 or "eq" not in p:
                raise ScriptError("Where-Object: only `Where-Object Property -eq 'value'` is supported")
            prop, wanted = cmd.positional[0], p["eq"]
            rows = piped if isinstance(piped, list) else [piped]
            return [r for r in rows if str(r.get(prop, "")).lower() == str(wanted).lower()]
        if name == "convertto-json":
            return json.dumps(piped, ensure_ascii=False, separators=(",", ":") if p.get("compress") else None)
        raise ScriptError(f"The term '{cmd.name}' is not recognized as the name of a cmdlet")


# --- WS-Management over HTTP ---------------------------------------------------------------------


def envelope(action: str, relates_to: str, body: str) -> bytes:
    ns = " ".join(f'xmlns:{k}="{v}"' for k, v in NS.items())
    return (
        f'<?xml version="1.0" encoding="utf-8"?><s:Envelope {ns}><s:Header>'
        f"<a:Action>{action}</a:Action><a:MessageID>uuid:{uuid.uuid4()}</a:MessageID>"
        f"<a:RelatesTo>{relates_to}</a:RelatesTo><a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>"
        f"</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def fault(reason: str) -> bytes:
    body = (
        "<s:Fault><s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>w:InternalError</s:Value>"
        f'</s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">{_xml(reason)}</s:Text></s:Reason></s:Fault>'
    )
    return envelope("http://schemas.dmtf.org/wbem/wsman/1/wsman/fault", "", body)


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass
class Shell:
    """An open cmd shell and the output of its commands."""

    commands: dict[str, tuple[bytes, bytes, int]] = field(default_factory=dict)


class Broker:
    """Protocol state: credentials, open shells, and the RDS state behind them."""

    def __init__(self, state: BrokerState, user: str, password: str) -> None:
        self.state = state
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        self.shells: dict[str, Shell] = {}
        self.lock = threading.Lock()

    def handle(self, request: bytes) -> tuple[int, bytes]:
        root = ET.fromstring(request)
        action = root.findtext("s:Header/a:Action", "", NS)
        message_id = root.findtext("s:Header/a:MessageID", "", NS)
        shell_id = root.findtext("s:Header/w:SelectorSet/w:Selector[@Name='ShellId']", "", NS)
        verb = action.rsplit("/", 1)[-1]
        if verb == "Create":
            new_id = str(uuid.uuid4()).upper()
            with self.lock:
                self.shells[new_id] = Shell()
            body = (
                "<x:ResourceCreated><a:Address>wsman</a:Address><a:ReferenceParameters>"
                f"<w:ResourceURI>{SHELL}/cmd</w:ResourceURI><w:SelectorSet>"
                f'<w:Selector Name="ShellId">{new_id}</w:Selector></w:SelectorSet></a:ReferenceParameters>'
                "</x:ResourceCreated>"
            )
            return 200, envelope(f"{action}Response", message_id, body)
        shell = self.shells.get(shell_id)
        if shell is None:
            return 500, fault(f"unknown shell {shell_id!r}")
        if verb == "Command":
            command = root.findtext("s:Body/rsp:CommandLine/rsp:Command", "", NS).strip()
            args = [a.text or "" for a in root.findall("s:Body/rsp:CommandLine/rsp:Arguments", NS)]
            command_id = str(uuid.uuid4()).upper()
            shell.commands[command_id] = self.execute(command, args)
            body = f"<rsp:CommandResponse><rsp:CommandId>{command_id}</rsp:CommandId></rsp:CommandResponse>"
            return 200, envelope(f"{action}Response", message_id, body)
        if verb == "Receive":
            stream = root.find("s:Body/rsp:Receive/rsp:DesiredStream", NS)
            command_id = stream.get("CommandId", "") if stream is not None else ""
            if command_id not in shell.commands:
                return 500, fault(f"unknown command {command_id!r}")
            out, err, code = shell.commands[command_id]
            body = (
                f'<rsp:ReceiveResponse><rsp:Stream Name="stdout" CommandId="{command_id}">'
                f"{base64.b64encode(out).decode()}</rsp:Stream>"
                f'<rsp:Stream Name="stdout" CommandId="{command_id}" End="true"></rsp:Stream>'
                f'<rsp:Stream Name="stderr" CommandId="{command_id}">{base64.b64encode(err).decode()}</rsp:Stream>'
                f'<rsp:Stream Name="stderr" CommandId="{command_id}" End="true"></rsp:Stream>'
                f'<rsp:CommandState CommandId="{command_id}" State="{DONE}"><rsp:ExitCode>{code}</rsp:ExitCode>'
                "</rsp:CommandState></rsp:ReceiveResponse>"
            )
            return 200, envelope(f"{action}Response", message_id, body)
        if verb == "Signal":
            signal = root.find("s:Body/rsp:Signal", NS)
            if signal is not None:
                shell.commands.pop(signal.get("CommandId", ""), None)
            return 200, envelope(f"{action}Response", message_id, "<rsp:SignalResponse/>")
        if verb == "Delete":
            with self.lock:
                self.shells.pop(shell_id, None)
            return 200, envelope(f"{action}Response", message_id, "")
        return 500, fault(f"unsupported action {action!r}")

    def execute(self, command: str, args: list[str]) -> tuple[bytes, bytes, int]:
        """Run a command line: only `powershell -encodedcommand <base64 UTF-16-LE>` is known here."""
        parts = command.split() + args
        if len(parts) != 3 or parts[0].lower() != "powershell" or parts[1].lower() != "-encodedcommand":
            return b"", f"'{parts[0] if parts else ''}' is not supported by the lab broker\r\n".encode(), 1
        try:
            script = base64.b64decode(parts[2]).decode("utf-16-le")
            return self.state.run(script).encode("utf-8"), b"", 0
        except (ScriptError, KeyError, ValueError) as exc:
            return b"", f"{exc}\r\n".encode(), 1


def make_handler(broker: Broker) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            request = self.rfile.read(length)
            if self.path.rstrip("/") != "/wsman":
                self.reply(404, b"")
                return
            if self.headers.get("Authorization") != broker.auth:
                self.reply(401, b"", {"WWW-Authenticate": 'Basic realm="WSMAN"'})
                return
            try:
                status, body = broker.handle(request)
            except ET.ParseError:
                status, body = 500, fault("request is not XML")
            self.reply(status, body)

        def reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/soap+xml;charset=UTF-8")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="The lab's WS-Management terminal-server broker")
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", type=Path)
    parser.add_argument("--key", type=Path)
    parser.add_argument("--user", required=True)
    parser.add_argument("--secrets", type=Path, required=True, help="NAME=value file holding the password")
    parser.add_argument("--password-var", required=True)
    args = parser.parse_args()
    secrets = dict(line.split("=", 1) for line in args.secrets.read_text(encoding="utf-8").splitlines() if "=" in line)
    broker = Broker(BrokerState(args.state), args.user, secrets[args.password_var])
    server = ThreadingHTTPServer((args.host, args.port), make_handler(broker))
    server.daemon_threads = True
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
