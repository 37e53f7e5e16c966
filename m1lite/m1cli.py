"""The `m1` client: call any environment endpoint the way the MinusOneDB guide does.

    m1 ENV PATH -param value ...          any endpoint (ENV: URL or saved name)
    m1 auth ENV                           log in and save the token
    m1 env add|list|remove                saved environment names
    m1 orchestrate addStores ENV [ENVKEY] FILE

Parameters use MinusOneDB's `-name value` form, which argparse would read as
options, so the ENV PATH form is parsed by hand; argparse only runs `m1 env`.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, NoReturn
from urllib.parse import urlsplit

import httpx

from m1lite import __version__
from m1lite.client import DEFAULT_TIMEOUT, Client, ClientError, ServerUnreachable

EXIT_ERROR = 1  # the server answered with an error
EXIT_UNREACHABLE = 2  # no answer at all
EXIT_USAGE = 64  # sysexits EX_USAGE: bad command line, unknown ENV, unreadable @file

# Words that are commands, so they cannot be environment names.
RESERVED = frozenset({"auth", "env", "orchestrate", "help", "ops", "signup"})

USAGE = """\
Usage: m1 [OPTIONS] ENV PATH [-param value ...]
       m1 auth ENV [-username USER -password PASSWORD]
       m1 env add NAME URL | m1 env list | m1 env remove NAME
       m1 orchestrate addStores ENV [ENVKEY] FILE
       m1 help [call|auth|env|orchestrate]
"""

MAIN_HELP = (
    USAGE
    + """
Calls an m1lite (MinusOneDB-compatible) environment. ENV is a URL such as
http://127.0.0.1:8080 or a name saved with `m1 env add NAME URL`. PATH is the
endpoint without its leading slash (user/add, query, session/query, ...).

Parameters (after PATH):
  -name value     one request parameter; repeat a name to send it several times
  -name @file     the value is the file's content (one trailing newline dropped);
                  @- reads standard input
  -name @@text    a literal value that starts with @ (sent as @text)
  publish -file @path uploads the file itself (multipart)

Options (before ENV, or anywhere a -name could go):
  --raw           print the answer body exactly as the server sent it
  --token TOKEN   send this token instead of the one saved by `m1 auth`
  --timeout SECS  how long to wait for an answer (default 120)
  --help          this text; `m1 COMMAND --help` explains one command
  --version       the m1lite version

Examples from the event capture guide, with the environment saved as `local`:
  m1 env add local http://127.0.0.1:8080
  m1 auth local
  m1 local user/add -username instrument -password ChangeMeNow! -rights '["publish"]'
  m1 local user/update -username instrument -rights '["publish"]'
  m1 local system/cors/add -domains localhost.somethingunique
  m1 orchestrate addStores local envKey addSessionStore.json
  m1 local user/add -username flush -password "change this password" \\
      -rights '["publish", "sessionUpdate", "sessionQuery"]'
  m1 local user/update -username instrument -rights '["publish", "sessionUpdate"]'
  m1 local query -store index -q '*' -sort "_m1.receivedUTC desc" -rows 5
  m1 local query -store index -q "event.type:heartbeat" -sort "_m1.receivedUTC desc" -rows 3
  m1 local session/query -store stash -q "*"
  m1 local schema/add -properties @fileWithSchema.json

JSON answers are pretty-printed (2-space indent), text answers printed as they
come, and an empty (204) answer prints nothing.

Exit status: 0 success; 1 the server answered with an error (its message on
stderr; a 401 means the saved token expired or is invalid: run m1 auth ENV);
2 the server could not be reached; 64 bad command line, unknown ENV or an
unreadable @file.

Saved names and tokens live in $M1_CONFIG_DIR, else $XDG_CONFIG_HOME/m1, else
~/.config/m1 (envs.json, tokens.json; readable only by you). Passwords are
never saved.
"""
)

CALL_HELP = """\
Usage: m1 [OPTIONS] ENV PATH [-param value ...]

Sends one request to ENV/PATH. Parameters go as form fields in a POST (a GET
for ping and health, and for system, system/NAME and init when no parameters
are given, which reads instead of writing). The token saved by `m1 auth ENV`
goes in the m1-auth-token header.

  -name value     one parameter (JSON values are given as JSON text:
                  -rights '["publish"]', -items '[{"a": 1}]')
  -name @file     the value is read from file (@- = standard input)
  -name @@text    a literal value starting with @
  publish -file @events.jsonl uploads a local file; -file NAME without @
  names a file already in the server's DATA/import/ folder.
  --raw           print the body unchanged   --token TOKEN   use this token

Examples:
  m1 local ping
  m1 local user/list
  m1 local system -geo true -token-expire-ms 86400000
  m1 local write -items '[{"event": {"type": "view"}}]' -async false
  m1 local query -store index -q '*' -sort "_m1.receivedUTC desc" -rows 5
  m1 local schema/add -properties @fileWithSchema.json
"""

AUTH_HELP = """\
Usage: m1 auth ENV [-username USER] [-password PASSWORD] [-ttl MS] [-ip IP]

Logs in to ENV (POST /auth) and saves the token for later commands. Asks for
whatever is not given: on a terminal with a prompt (the password is not
echoed); otherwise it reads the username and then the password from standard
input, one per line:

  m1 auth local
  printf '%s\\n%s\\n' admin "$ADMIN_PASSWORD" | m1 auth local
  m1 auth local -username admin -password @password.txt

The password is not saved, so when the token expires (system property
token-expire-ms) commands fail with "token expired or invalid" until you run
m1 auth ENV again.
"""

ORCHESTRATE_HELP = """\
Usage: m1 orchestrate addStores ENV [ENVKEY] FILE

Adds the data stores and session stores that FILE describes, in the shape of
the guide's addSessionStore.json:

  {"environment": {"stores": [], "sessionStores": [{"store": "stash",
   "shards": 1, "replicas": 1}]}}

ENVKEY is accepted for compatibility with the guide and not needed: m1lite
uses the token saved by `m1 auth ENV` (the admin right is required).

  m1 orchestrate addStores local envKey addSessionStore.json
"""

ENV_HELP = """\
Saved environment names, so `m1 NAME ...` can stand for `m1 URL ...`.

  m1 env add local http://127.0.0.1:8080
  m1 env list
  m1 env remove local
"""


class Failure(Exception):
    """Stops the command with a message on stderr."""

    exit_code = EXIT_ERROR


class UsageError(Failure):
    exit_code = EXIT_USAGE


@dataclass
class Options:
    raw: bool = False
    token: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    help: bool = False


# ---------------------------------------------------------------- configuration


def config_dir(environ: Mapping[str, str]) -> Path:
    if environ.get("M1_CONFIG_DIR"):
        return Path(environ["M1_CONFIG_DIR"])
    xdg = environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "m1"


class ConfigStore:
    """envs.json ({name: url}) and tokens.json ({url: {token, username, ...}})."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _read(self, name: str) -> dict[str, Any]:
        path = self.directory / name
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise Failure(f"cannot read {path}: {exc}") from exc
        if not isinstance(value, dict):
            raise Failure(f"{path} should hold a JSON object")
        return value

    def _write(self, name: str, value: dict[str, Any]) -> None:
        # Tokens are credentials: the directory is 700 and files 600, written
        # to a temporary file and renamed so a crash never leaves half a file.
        if not self.directory.exists():
            self.directory.mkdir(parents=True, mode=0o700)
            os.chmod(self.directory, 0o700)
        path = self.directory / name
        temp = self.directory / f".{name}.{os.getpid()}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)

    def envs(self) -> dict[str, str]:
        return {k: v for k, v in self._read("envs.json").items() if isinstance(v, str)}

    def save_envs(self, envs: dict[str, str]) -> None:
        self._write("envs.json", envs)

    def tokens(self) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self._read("tokens.json").items() if isinstance(v, dict)}

    def token_for(self, url: str) -> str | None:
        token = self.tokens().get(url, {}).get("token")
        return token if isinstance(token, str) else None

    def save_token(self, url: str, record: dict[str, Any]) -> None:
        tokens = self.tokens()
        tokens[url] = record
        self._write("tokens.json", tokens)

    def drop_token(self, url: str) -> None:
        tokens = self.tokens()
        if tokens.pop(url, None) is not None:
            self._write("tokens.json", tokens)


def normalise_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"not an http:// or https:// URL: {url!r}")
    if parts.query or parts.fragment:
        raise UsageError(f"the URL must not have a query or fragment: {url!r}")
    return url.rstrip("/")


def resolve_env(store: ConfigStore, env: str) -> str:
    if "://" in env:
        return normalise_url(env)
    url = store.envs().get(env)
    if url is None:
        raise UsageError(
            f"unknown environment {env!r}: give a URL (http://HOST:PORT) "
            f"or save the name first with: m1 env add {env} URL"
        )
    return url


# ---------------------------------------------------------------- parsing


def read_value(raw: str) -> str:
    """`@file` is the file's content, `@-` standard input, `@@x` the literal `@x`."""
    if raw.startswith("@@"):
        return raw[1:]
    if not raw.startswith("@"):
        return raw
    source = raw[1:]
    if not source:
        raise UsageError("'@' needs a file name (use @@ for a literal @)")
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {source}: {exc}") from exc
    # A file usually ends with a newline its author did not mean as part of the
    # value (think -password @secret.txt); JSON does not care either way.
    return text.removesuffix("\n").removesuffix("\r")


def take_option(args: Sequence[str], i: int, options: Options) -> int:
    """Apply the `--option` at args[i]; returns how many words it used."""
    word = args[i]
    name, _, inline = word.partition("=")
    if name in ("--raw", "--help") and not inline:
        setattr(options, name[2:], True)
        return 1
    if name in ("--token", "--timeout"):
        value = inline if inline else (args[i + 1] if i + 1 < len(args) else None)
        if value is None:
            raise UsageError(f"{name} needs a value")
        if name == "--token":
            options.token = value
        else:
            try:
                options.timeout = float(value)
            except ValueError:
                raise UsageError(f"--timeout needs a number of seconds, not {value!r}") from None
        return 1 if inline else 2
    raise UsageError(f"unknown option {word}")


@dataclass
class CallArgs:
    params: dict[str, str | tuple[str, ...]] = field(default_factory=dict)
    # Raw `@path` values of upload parameters (publish -file @path), not read as text.
    uploads: dict[str, str] = field(default_factory=dict)


def parse_params(args: Sequence[str], options: Options, uploads: frozenset[str]) -> CallArgs:
    """`-name value` pairs and `--options`; names in `uploads` keep their @path raw."""
    result = CallArgs()
    i = 0
    while i < len(args):
        word = args[i]
        if word.startswith("--"):
            i += take_option(args, i, options)
            continue
        if not word.startswith("-") or len(word) == 1:
            raise UsageError(f"expected a -name before {word!r} (parameters are -name value)")
        name = word[1:]
        if i + 1 >= len(args):
            raise UsageError(f"-{name} needs a value")
        raw = args[i + 1]
        i += 2
        if name in uploads and raw.startswith("@") and not raw.startswith("@@"):
            result.uploads[name] = raw[1:]
            continue
        value = read_value(raw)
        previous = result.params.get(name)
        if previous is None:
            result.params[name] = value
        elif isinstance(previous, tuple):
            result.params[name] = (*previous, value)
        else:
            result.params[name] = (previous, value)
    return result


# ---------------------------------------------------------------- output


def print_answer(response: httpx.Response, raw: bool) -> None:
    if response.status_code == 204 or not response.content:
        return
    if raw:
        sys.stdout.buffer.write(response.content)
        sys.stdout.flush()
        return
    if "json" in response.headers.get("content-type", ""):
        try:
            value = response.json()
        except ValueError:
            pass  # labelled JSON but is not: show it as text
        else:
            print(json.dumps(value, indent=2, ensure_ascii=False))
            return
    text = response.text
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def report(error: ClientError, env: str, had_token: bool) -> int:
    print(f"m1: {error.status} {error.code}: {error.message}", file=sys.stderr)
    if error.status == 401:
        # Passwords are never saved, so m1 cannot log in again by itself.
        if had_token:
            print(f"m1: token expired or invalid: run m1 auth {env}", file=sys.stderr)
        else:
            print(f"m1: no saved token for {env}: run m1 auth {env}", file=sys.stderr)
    return EXIT_ERROR


# ---------------------------------------------------------------- commands


def call_command(store: ConfigStore, args: Sequence[str], options: Options) -> int:
    if not args or args[0].startswith("-"):
        raise UsageError("expected ENV PATH after the options")
    env = args[0]
    rest = list(args[1:])
    while rest and rest[0].startswith("--"):
        del rest[: take_option(rest, 0, options)]
    if options.help:
        print(CALL_HELP, end="")
        return 0
    if not rest:
        raise UsageError(f"missing PATH after {env} (for example: m1 {env} ping)")
    path = rest[0].strip("/")
    uploads = frozenset({"file"}) if path == "publish" else frozenset()
    parsed = parse_params(rest[1:], options, uploads)
    if options.help:
        print(CALL_HELP, end="")
        return 0
    url = resolve_env(store, env)
    token = options.token or store.token_for(url)
    files: dict[str, tuple[str, BinaryIO]] = {}
    try:
        for name, source in parsed.uploads.items():
            try:
                stream = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115
            except OSError as exc:
                raise UsageError(f"cannot read {source}: {exc}") from exc
            files[name] = (Path(source).name if source != "-" else "stdin", stream)
        with Client(url, token, timeout=options.timeout) as client:
            response = client.call(path, parsed.params, files or None)
    except ServerUnreachable:
        raise
    except ClientError as error:
        return report(error, env, token is not None)
    finally:
        for _, stream in files.values():
            if stream is not sys.stdin.buffer:
                stream.close()
    print_answer(response, options.raw)
    return 0


def read_credentials(params: dict[str, str | tuple[str, ...]]) -> tuple[str, str]:
    def single(name: str) -> str | None:
        value = params.pop(name, None)
        return value[-1] if isinstance(value, tuple) else value

    username, password = single("username"), single("password")
    if sys.stdin.isatty():
        if username is None:
            sys.stderr.write("username: ")
            sys.stderr.flush()
            username = sys.stdin.readline().strip()
        if password is None:
            password = getpass.getpass("password: ")
    else:
        # Scripts pipe "username\npassword\n"; only what was not given is read.
        if username is None:
            username = sys.stdin.readline().rstrip("\r\n")
        if password is None:
            line = sys.stdin.readline()
            if not line:
                raise UsageError("expected the password on standard input (after the username)")
            password = line.rstrip("\r\n")
    if not username:
        raise UsageError("no username given")
    return username, password


def auth_command(store: ConfigStore, args: Sequence[str], options: Options) -> int:
    if not args:
        raise UsageError("m1 auth needs an ENV (a URL or a saved name)")
    env = args[0]
    parsed = parse_params(args[1:], options, frozenset())
    if options.help or env in ("-h", "--help"):
        print(AUTH_HELP, end="")
        return 0
    url = resolve_env(store, env)
    params = parsed.params
    username, password = read_credentials(params)
    with Client(url, timeout=options.timeout) as client:
        try:
            token = client.auth(username, password, **params)
        except ServerUnreachable:
            raise
        except ClientError as error:
            print(f"m1: {error.status} {error.code}: {error.message}", file=sys.stderr)
            return EXIT_ERROR
        now = datetime.now(UTC)
        record: dict[str, Any] = {
            "token": token,
            "username": username,
            "obtained": _iso(now),
            "expires": None,
        }
        lifetime_ms = _token_lifetime_ms(client, params)
        if lifetime_ms is not None:
            record["expires"] = _iso(now + timedelta(milliseconds=lifetime_ms))
    store.save_token(url, record)
    label = env if env == url else f"{env} ({url})"
    print(f"m1: logged in to {label} as {username}; token saved", file=sys.stderr)
    return 0


def _token_lifetime_ms(client: Client, params: Mapping[str, Any]) -> int | None:
    """Known when -ttl was given, or when the user may read token-expire-ms (admin)."""
    text: Any = params.get("ttl")
    if text is None:
        try:
            text = client.call("system/token-expire-ms").text
        except ClientError:
            return None
    try:
        return int(str(text).strip())
    except ValueError:
        return None


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\n{self.format_usage().rstrip()}")


def env_command(store: ConfigStore, args: Sequence[str]) -> int:
    parser = _ArgumentParser(
        prog="m1 env", description=ENV_HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="add|list|remove")
    add = commands.add_parser("add", help="save NAME for URL")
    add.add_argument("name")
    add.add_argument("url")
    commands.add_parser("list", help="show saved names, URLs and tokens")
    remove = commands.add_parser("remove", help="forget NAME (and its token)")
    remove.add_argument("name")
    ns = parser.parse_args(args)
    envs = store.envs()
    if ns.command == "add":
        name = ns.name
        if name in RESERVED or "/" in name or ":" in name or name.startswith("-"):
            raise UsageError(f"{name!r} cannot be an environment name")
        envs[name] = normalise_url(ns.url)
        store.save_envs(envs)
        print(f"m1: {name} = {envs[name]}", file=sys.stderr)
    elif ns.command == "remove":
        url = envs.pop(ns.name, None)
        if url is None:
            raise UsageError(f"unknown environment {ns.name!r}")
        store.save_envs(envs)
        if url not in envs.values():
            store.drop_token(url)
    else:
        _list_envs(store, envs)
    return 0


def _list_envs(store: ConfigStore, envs: dict[str, str]) -> None:
    if not envs:
        print("m1: no saved environments (add one with: m1 env add NAME URL)", file=sys.stderr)
        return
    tokens = store.tokens()
    width = max(len(name) for name in envs)
    url_width = max(len(url) for url in envs.values())
    for name in sorted(envs):
        url = envs[name]
        token = tokens.get(url)
        if token is None:
            state = "no token"
        else:
            state = f"token for {token.get('username')}"
            if token.get("expires"):
                state += f", expires {token['expires']}"
        print(f"{name:<{width}}  {url:<{url_width}}  {state}")


def load_template(path: str) -> dict[str, Any]:
    """The `environment` object of an addSessionStore.json-shaped file."""
    text = read_value("@" + path)
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        # The guide's web page shows the file with a backslash ending some lines
        # (a Markdown line-break escape); drop those so a copy-paste still works.
        try:
            document = json.loads(re.sub(r"\\\r?\n", "\n", text))
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path} is not JSON: {exc}") from exc
    environment = document.get("environment", document) if isinstance(document, dict) else None
    if not isinstance(environment, dict):
        raise UsageError(f'{path} should hold {{"environment": {{"stores": [...], ...}}}}')
    return environment


def orchestrate_command(store: ConfigStore, args: Sequence[str], options: Options) -> int:
    words: list[str] = []
    i = 0
    while i < len(args):
        if args[i].startswith("--"):
            i += take_option(args, i, options)
        else:
            words.append(args[i])
            i += 1
    if options.help:
        print(ORCHESTRATE_HELP, end="")
        return 0
    if not words or words[0] != "addStores":
        what = f"unknown orchestrate command {words[0]!r}" if words else "missing command"
        raise UsageError(f"{what}; m1lite supports: m1 orchestrate addStores ENV [ENVKEY] FILE")
    if len(words) not in (3, 4):
        raise UsageError("usage: m1 orchestrate addStores ENV [ENVKEY] FILE")
    env, file = words[1], words[-1]
    environment = load_template(file)
    url = resolve_env(store, env)
    token = options.token or store.token_for(url)
    with Client(url, token, timeout=options.timeout) as client:
        try:
            response = client.call("orchestrate/addStores", {"environment": environment})
        except ServerUnreachable:
            raise
        except ClientError as error:
            return report(error, env, token is not None)
    print_answer(response, options.raw)
    return 0


HELP_TOPICS = {"call": CALL_HELP, "auth": AUTH_HELP, "orchestrate": ORCHESTRATE_HELP}


def run(args: Sequence[str], environ: Mapping[str, str]) -> int:
    options = Options()
    args = list(args)
    while args and args[0].startswith("-"):
        if args[0] in ("-h", "--help"):
            print(MAIN_HELP, end="")
            return 0
        if args[0] == "--version":
            print(f"m1 (m1lite) {__version__}")
            return 0
        del args[: take_option(args, 0, options)]
    if not args:
        sys.stderr.write(USAGE + "Try 'm1 --help' for more.\n")
        return EXIT_USAGE
    store = ConfigStore(config_dir(environ))
    command, rest = args[0], args[1:]
    if command == "help":
        topic = rest[0] if rest else None
        if topic == "env":
            return env_command(store, ["--help"])
        print(HELP_TOPICS.get(topic or "", MAIN_HELP), end="")
        return 0
    if command == "env":
        return env_command(store, rest)
    if command == "auth":
        return auth_command(store, rest, options)
    if command == "orchestrate":
        return orchestrate_command(store, rest, options)
    if command in ("ops", "signup"):
        raise UsageError("m1lite has no ops service: environments are started with m1lite serve")
    return call_command(store, args, options)


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        return run(args, os.environ)
    except ServerUnreachable as error:
        print(f"m1: {error.message}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except Failure as failure:
        print(f"m1: {failure}", file=sys.stderr)
        if isinstance(failure, UsageError):
            print("Try 'm1 --help' for more.", file=sys.stderr)
        return failure.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `m1 ... | head`: the reader left; not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
