"""The remote engine (issue 18): ``python -m engine serve`` and its relay ``python -m engine.remote.relay``.

A real server runs on 127.0.0.1 in a subprocess (a free port, one worker, one thread); the add-on's own client
(`EngineSession`) runs fits and evolutions through the relay and gets what a local run gives; raw WebSocket clients
break the rules on purpose (tokens, framing, sizes, paths) and the server keeps serving the others. Every wait is
bounded: a hung test fails instead of hanging.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import ssl
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from websockets.sync.server import serve

from addon.core.params import fit_params
from addon.core.worker_client import REMOTE_RELAY_MODULE, EngineSession, JobRequest, SessionState, WorkerLaunch
from engine import protocol
from engine.jobs import JOBS, JobContext, field_docs
from engine.model import load_model
from engine.remote import frames, relay, server

from .remote_server import TOKEN, ServerUnderTest

REPO = Path(__file__).resolve().parents[2]
LEGACY_MODEL = REPO / "tests" / "data" / "legacy_v1_model.pt"
MESSAGE_TIMEOUT_S = 120.0
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


OPEN_CLIENTS: list[RawClient] = []


@pytest.fixture(autouse=True)
def close_raw_clients():
    """Every raw client is closed after its test (one left open, unread, would hold up the server's stop)."""
    yield
    while OPEN_CLIENTS:
        OPEN_CLIENTS.pop().close()


class RawClient:
    """A WebSocket client that speaks the transport by hand."""

    def __init__(self, url: str, token: str | None = TOKEN):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # legacy=True: connect() returns the connection itself (the tests close it), as websockets documents
        self.ws = connect(url, additional_headers=headers, open_timeout=30, max_size=None, compression=None,
                          legacy=True)
        OPEN_CLIENTS.append(self)
        self.hello = self.next()

    def send(self, message: dict) -> None:
        self.ws.send(json.dumps(message))

    def upload(self, job: str, role: str, data: bytes) -> None:
        self.ws.send(frames.fragments(job, role, data))

    def next(self, timeout_s: float = MESSAGE_TIMEOUT_S):
        """The next message but heartbeats: a dict, or (header, payload) for a file."""
        deadline = time.monotonic() + timeout_s
        while True:
            data = self.ws.recv(timeout=max(deadline - time.monotonic(), 0.1))
            if isinstance(data, bytes):
                header, payload = frames.parse(data, frames.download_role_ok)
                return header, bytes(payload)
            message = json.loads(data)
            if message["type"] != "alive":
                return message

    def until_end(self, job: str) -> tuple[dict, list]:
        seen = []
        while True:
            message = self.next()
            seen.append(message)
            if isinstance(message, dict) and message["type"] in ("result", "error", "cancelled"):
                assert message["job"] == job, message
                return message, seen

    def closed(self, timeout_s: float = 30.0) -> ConnectionClosed:
        """Read until the server closes; returns how (messages before it are dropped)."""
        deadline = time.monotonic() + timeout_s
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                self.ws.recv(timeout=max(deadline - time.monotonic(), 0.1))
        return closed.value

    def close(self) -> None:
        self.ws.close()


def job_message(job: str, kind: str, params: dict, directory: str = "") -> dict:
    return {"type": "job", "protocol": protocol.PROTOCOL_VERSION, "job": job, "kind": kind, "dir": directory,
            "params": params}  # fmt: skip


def sphere_inputs(subdivisions: int = 2) -> dict[str, np.ndarray]:
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.5)
    return {"vertices_0": sphere.vertices.astype(np.float32), "faces_0": sphere.faces.astype(np.intc)}


def npz_bytes(arrays: dict, folder: Path) -> bytes:
    np.savez(folder / "upload.npz", **arrays)
    return (folder / "upload.npz").read_bytes()


def tiny_fit(steps: int, **overrides) -> dict:
    params = fit_params(preset="tiny", steps=steps, resolution=24, device="cpu", seed=0, names=["Sphere"])
    return {**params, **overrides}


def evolve_params(model: Path) -> dict:
    return {"model": str(model), "flow": {"mean_curvature": 0.0, "normal_speed": -0.1, "fields": []},
            "times": [0.0, 0.5, 1.0], "steps": 20, "resolution": 24, "device": "cpu", "seed": 0,
            "curvature": "mean"}  # fmt: skip


def relay_launch(url: str, token: str = TOKEN) -> WorkerLaunch:
    environment = {protocol.REMOTE_URL_VARIABLE: url, protocol.REMOTE_TOKEN_VARIABLE: token}
    return WorkerLaunch(sys.executable, REPO, environment, module=REMOTE_RELAY_MODULE)


def run_session(launch: WorkerLaunch, requests: list[JobRequest], jobs_dir: Path, on_poll=lambda s: None):
    session = EngineSession(launch, requests, jobs_dir, hang_timeout_s=60.0)
    session.start()
    deadline = time.monotonic() + MESSAGE_TIMEOUT_S
    while not session.finished:
        assert time.monotonic() < deadline, "the session did not finish"
        session.wait(0.1)
        session.poll()
        on_poll(session)
    return session


def run_locally(kind: str, params: dict, inputs: dict, folder: Path):
    folder.mkdir()
    return JOBS[kind].from_params(params).run(inputs, JobContext(output_dir=folder))


@pytest.fixture(scope="module")
def engine_server(tmp_path_factory):
    """One server for the file: a token, and small limits (1 MB a message, 2 MB of uploads waiting)."""
    process = ServerUnderTest(tmp_path_factory.mktemp("server"), "--max-message-mb", "1", "--max-pending-mb", "2")
    yield process
    assert process.stop() == 0, process.log()
    assert not process.root.exists()  # the job folders went with the server


# The transport's pieces.


def test_the_file_params_are_the_spec_fields_that_name_a_file():
    named = {kind: tuple(name for name, doc in field_docs(spec).items() if doc.startswith("Path of"))
             for kind, spec in JOBS.items()}  # fmt: skip
    assert protocol.MODEL_FILE_PARAMS == {kind: names for kind, names in named.items() if names}


def test_a_file_frame_reads_back_whole_and_in_any_fragments():
    payload = bytes(range(256)) * 5000
    message = b"".join(bytes(part) for part in frames.fragments("j1", "file:model", payload, "model.pt"))
    header, data = frames.parse(message, frames.download_role_ok)
    assert header == {"job": "j1", "role": "file:model", "size": len(payload), "name": "model.pt"}
    assert bytes(data) == payload
    reader, received = frames.FrameReader(frames.download_role_ok), b""
    cuts = [*range(0, 90, 3), *range(90, len(message), 100_000), len(message)]  # a proxy may cut a message anywhere
    for start, end in zip(cuts, cuts[1:]):
        received += bytes(reader.feed(message[start:end]))
    reader.finish()
    assert reader.header == header and received == payload


def frame(header, payload: bytes = b"", length: int | None = None) -> bytes:
    encoded = json.dumps(header).encode() if isinstance(header, dict) else header
    return struct.pack(">I", len(encoded) if length is None else length) + encoded + payload


BAD_FRAMES = {
    "too short": (b"\x00\x01", "ends before its header"),
    "header past the end": (frame({"job": "a", "role": "inputs", "size": 0}, length=400), "ends before its header"),
    "size mismatch": (frame({"job": "a", "role": "inputs", "size": 10}, b"12345"), "announces 10 bytes but carries 5"),
    "unknown role": (frame({"job": "a", "role": "param:../../etc/passwd", "size": 0}), "unknown role"),
    "header not JSON": (frame(b"{nope"), "not UTF-8 JSON"),
    "huge header length": (struct.pack(">I", 1 << 30), "header length must be"),
}


@pytest.mark.parametrize("name", BAD_FRAMES)
def test_a_broken_frame_is_refused_before_anything_is_stored(name):
    data, problem = BAD_FRAMES[name]
    with pytest.raises(frames.FrameError, match=re.escape(problem)):
        frames.parse(data, frames.upload_role_ok)


def test_only_plain_file_names_are_taken():
    assert frames.is_plain_name("model.pt") and frames.is_plain_name("outputs.npz")
    assert not any(frames.is_plain_name(name) for name in ("", ".", "..", "a/b", "..\\x", "C:x", "/etc/passwd", 3))


def test_the_relay_says_why_the_connection_ended():
    class Close:
        def __init__(self, code, reason=""):
            self.code, self.reason = code, reason

    url = "ws://gpu:8765"
    stopped = relay.closed_message(url, Close(1001), Close(1001), busy=True)
    assert stopped == (
        "The remote engine at ws://gpu:8765 closed the connection (it was stopped or restarted) while a job ran. "
        "Nothing in the scene was changed; try again"
    )
    assert relay.closed_message(url, None, None, busy=True) == stopped  # killed: no close frame at all
    assert "--max-message-mb" in relay.closed_message(url, Close(1009, "too big"), None, busy=True)
    assert relay.closed_message(url, Close(1008, "bad frame"), None, busy=False).endswith("connection: bad frame")
    assert "was lost (keepalive ping timeout)" in relay.closed_message(url, None, Close(1011, "keepalive ping timeout"),
                                                                       busy=False)  # fmt: skip
    assert relay.shown("ws://user:secret@gpu:8765/x") == "ws://gpu:8765/x"


# The server's settings, refused before anything is bound.


@pytest.mark.parametrize("host", ["0.0.0.0", "::", ""])
def test_a_host_others_can_reach_needs_a_token(host, capsys):
    assert server.main(["--host", host]) == 2
    assert "needs --token-file" in capsys.readouterr().err


def test_names_are_resolved_before_they_count_as_loopback():
    assert server.is_loopback("localhost") and server.is_loopback("127.0.0.2") and server.is_loopback("::1")
    assert not server.is_loopback("0.0.0.0") and not server.is_loopback("")


def test_an_empty_or_shared_token_file_is_refused(tmp_path, capsys):
    token = tmp_path / "token"
    token.write_text("  \n")
    token.chmod(0o600)
    assert server.main(["--token-file", str(token)]) == 2
    assert "is empty" in capsys.readouterr().err
    token.write_text(TOKEN)
    token.chmod(0o644)
    assert server.main(["--token-file", str(token)]) == 2
    error = capsys.readouterr().err
    assert "can be read by other users" in error and "chmod 600" in error and TOKEN not in error


def test_the_command_line_dispatches_serve():
    result = subprocess.run([sys.executable, "-m", "engine", "serve", "--host", "0.0.0.0"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2 and "needs --token-file" in result.stderr


# Through the add-on's client: what a local worker would give.


def test_a_fit_then_an_evolve_of_its_model_through_the_addons_client(engine_server, tmp_path):
    inputs = sphere_inputs()
    fit = tiny_fit(200, preview_interval=0.01)
    previews = []

    def check_preview(session):
        progress = session.progress
        if progress is not None and progress.preview and progress.preview not in previews:
            previews.append(progress.preview)
            with np.load(session.preview_file(), allow_pickle=False) as data:  # written before it was announced
                assert data["vertices"].shape[1] == 3 and data["faces"].dtype == np.int32

    launch = relay_launch(engine_server.url)
    request = JobRequest("fit", fit, inputs, "fitting 'Sphere'")
    session = run_session(launch, [request], tmp_path / "jobs", check_preview)
    assert session.state is SessionState.SUCCEEDED, session.message
    assert session.hello["remote"] == engine_server.url and session.hello["server"] is True
    assert session.hello["torch"] and session.hello["workers"] == 1
    (result,) = session.results
    model = tmp_path / "Sphere.pt"
    shutil.copy(result.files["model"], model)  # kept beside the .blend, as the add-on does
    assert previews and previews == sorted(previews) and previews[-1] <= result.summary["previews"]
    session.close()

    local = run_locally("fit", fit, inputs, tmp_path / "local_fit")
    assert set(result.outputs) == set(local.arrays)
    for name, array in local.arrays.items():
        np.testing.assert_array_equal(result.outputs[name], array)
        assert result.outputs[name].dtype == array.dtype
    assert load_model(model).metadata["sources"] == ["Sphere"]

    evolve = evolve_params(model)  # the model file on this machine: the relay uploads it
    session = run_session(launch, [JobRequest("evolve", evolve, {}, "evolving 'Sphere'")], tmp_path / "jobs")
    assert session.state is SessionState.SUCCEEDED, session.message
    (result,) = session.results
    assert result.files["model"].name == protocol.EVOLUTION_MODEL_FILENAME and result.files["model"].is_file()
    local = run_locally("evolve", evolve, {}, tmp_path / "local_evolve")
    assert set(result.outputs) == set(local.arrays)
    for name, array in local.arrays.items():
        np.testing.assert_array_equal(result.outputs[name], array)
    session.close()
    peer = r"127\.0\.0\.1:\d+ c\d+"
    engine_server.wait_for(rf"{peer}: job 's\d+-job-0' \(fit\) started on worker 0")
    engine_server.wait_for(rf"{peer}: job 's\d+-job-0' \(evolve\) ended: result")


def test_a_wrong_token_gets_no_hello_and_the_server_logs_the_refusal(engine_server, tmp_path):
    mark = len(engine_server.lines)
    session = run_session(relay_launch(engine_server.url, "not-the-token"), [], tmp_path / "jobs")
    assert session.state is SessionState.FAILED and session.hello is None
    assert session.message == (
        f"The remote engine at {engine_server.url} refused the token: check the token in the add-on preferences "
        "(Engine: Remote)"
    )
    engine_server.wait_for(r"127\.0\.0\.1:\d+: refused: bad token \(wrong one\)", since=mark)
    with pytest.raises(InvalidStatus) as refused:
        RawClient(engine_server.url, token=None)
    assert refused.value.response.status_code == 401
    engine_server.wait_for(r"refused: bad token \(none sent\)", since=mark)
    assert "not-the-token" not in engine_server.log() and TOKEN not in engine_server.log()


def test_a_cancel_from_the_addon_stops_the_remote_job(engine_server, tmp_path):
    def cancel_once_training(session):
        if session.progress is not None and session.progress.step > 0:
            session.cancel()

    mark = len(engine_server.lines)
    request = JobRequest("fit", tiny_fit(100_000), sphere_inputs(), "fitting 'Sphere'")
    session = run_session(relay_launch(engine_server.url), [request], tmp_path / "jobs", cancel_once_training)
    session.close()
    assert session.state is SessionState.CANCELLED
    assert session.message.startswith("Cancelled fitting 'Sphere' at step ")
    engine_server.wait_for(r"job 's\d+-job-0' \(fit\) ended: cancelled", since=mark)


def test_uploads_larger_than_the_limits_are_refused_and_the_server_serves_on(engine_server, tmp_path):
    # The relay knows the limits from the hello: the job fails with what to do, the connection stays.
    big = sphere_inputs(subdivisions=6)  # about 1.5 MB of arrays
    session = run_session(relay_launch(engine_server.url), [JobRequest("fit", tiny_fit(10), big, "fitting")],
                          tmp_path / "jobs")  # fmt: skip
    assert session.state is SessionState.FAILED
    assert "more than the remote engine at" in session.message and "--max-message-mb" in session.message
    session.close()
    # A client that sends one anyway is disconnected (1009, message too big).
    client = RawClient(engine_server.url)
    try:
        client.upload("a", "inputs", bytes(int(1.5 * 2**20)))
    except ConnectionClosed:
        pass  # closed while it was still sending
    assert client.closed().rcvd.code == 1009
    # Uploads waiting for their jobs count together: over 2 MB, an error, then the connection closes.
    client = RawClient(engine_server.url)
    for job in ("a", "b"):
        client.upload(job, "inputs", bytes(900_000))
    client.upload("c", "inputs", bytes(900_000))
    error = client.next()
    assert error["type"] == "error" and error["job"] == "c" and "--max-pending-mb" in error["message"]
    assert client.closed().rcvd.code == 1009
    assert RawClient(engine_server.url).hello["type"] == "hello"


def test_text_that_is_no_message_gets_an_error_and_the_connection_stays(engine_server):
    client = RawClient(engine_server.url)
    client.ws.send("not json")
    error = client.next()
    assert error["type"] == "error" and error["job"] is None and "invalid message: not JSON" in error["message"]
    client.send({"type": "dance"})
    assert "unknown message type 'dance'" in client.next()["message"]
    client.send({**job_message("v", "fit", tiny_fit(10)), "protocol": 99})
    error = client.next()
    assert error == {"type": "error", "job": "v", "message": error["message"]}
    assert error["message"].startswith("The add-on speaks protocol 99, this engine speaks 2")
    client.close()


@pytest.mark.parametrize("name", ["too short", "header past the end", "size mismatch", "unknown role"])
def test_a_broken_frame_closes_that_connection_only(engine_server, name):
    data, problem = BAD_FRAMES[name]
    bystander = RawClient(engine_server.url)
    client = RawClient(engine_server.url)
    client.ws.send(data)
    error = client.next()
    assert error["type"] == "error" and problem in error["message"]
    assert client.closed().rcvd.code == 1008
    bystander.send({"type": "dance"})  # still served
    assert bystander.next()["type"] == "error"
    bystander.close()


def test_no_path_a_client_names_is_opened_on_the_server(engine_server, tmp_path):
    client = RawClient(engine_server.url)
    for path in ("/etc/passwd", str(LEGACY_MODEL)):  # one that is not a model, one that is (on this machine)
        client.send(job_message("x", "extract", {"model": path, "resolution": 16, "device": "cpu"}))
        error = client.next()
        assert error["type"] == "error" and error["job"] == "x" and "'model' file was not uploaded" in error["message"]
    # The job's dir is ignored: the inputs there are not read, nothing is written there.
    np.savez(tmp_path / protocol.INPUTS_FILENAME, **sphere_inputs())
    client.send(job_message("y", "fit", tiny_fit(10), str(tmp_path)))
    end, _ = client.until_end("y")
    assert end["type"] == "error" and "the job's inputs have no array 'vertices_0'" in end["message"]
    assert sorted(path.name for path in tmp_path.iterdir()) == [protocol.INPUTS_FILENAME]
    # A file for a param the kind does not read as a file is refused.
    client.upload("z", "param:model", LEGACY_MODEL.read_bytes())
    client.send(job_message("z", "fit", tiny_fit(10)))
    assert "takes no file as its 'model'" in client.next()["message"]
    # Uploaded, the same model is used.
    client.upload("w", "param:model", LEGACY_MODEL.read_bytes())
    client.send(job_message("w", "extract", {"model": "anything", "resolution": 16, "device": "cpu"}))
    end, seen = client.until_end("w")
    assert end["type"] == "result", end
    files = {header["role"]: payload for header, payload in (m for m in seen if isinstance(m, tuple))}
    assert set(files) == {"outputs"} and end["outputs"] == protocol.OUTPUTS_FILENAME
    client.close()


def test_a_client_that_leaves_mid_job_frees_the_worker_for_the_next(engine_server, tmp_path):
    leaving = RawClient(engine_server.url)
    leaving.upload("long", "inputs", npz_bytes(sphere_inputs(), tmp_path))
    leaving.send(job_message("long", "fit", tiny_fit(100_000)))
    while not (isinstance(message := leaving.next(), dict) and message["type"] == "progress" and message["step"] > 0):
        assert not (isinstance(message, dict) and message["type"] in ("result", "error")), message
    leaving.upload("waiting", "param:model", LEGACY_MODEL.read_bytes())
    leaving.send(job_message("waiting", "extract", {"model": "m.pt", "resolution": 16, "device": "cpu"}))
    leaving.send({"type": "cancel", "job": "waiting"})
    while (message := leaving.next())["type"] == "progress":
        assert message["job"] == "long"
    assert message == protocol.cancelled("waiting", "Cancelled the extract job before it started")
    mark = len(engine_server.lines)
    leaving.close()
    engine_server.wait_for(r"job 'long' \(fit\) ended: cancelled", since=mark)
    client = RawClient(engine_server.url)
    client.upload("next", "param:model", LEGACY_MODEL.read_bytes())
    client.send(job_message("next", "extract", {"model": "m.pt", "resolution": 16, "device": "cpu"}))
    assert client.until_end("next")[0]["type"] == "result"
    client.close()


def test_two_clients_at_once_each_see_only_their_own_job(engine_server, tmp_path):
    clients = {steps: RawClient(engine_server.url) for steps in (20, 30)}
    for steps, client in clients.items():  # the same job id on both connections
        client.upload("same", "inputs", npz_bytes(sphere_inputs(), tmp_path))
        client.send(job_message("same", "fit", tiny_fit(steps)))
    for steps, client in clients.items():
        end, seen = client.until_end("same")
        assert end["type"] == "result" and end["summary"]["steps"] == steps
        progress = [m for m in seen if isinstance(m, dict) and m["type"] == "progress" and m["stage"] == "fit"]
        assert progress and {m["total"] for m in progress} == {steps}
        roles = [header["role"] for header, _ in (m for m in seen if isinstance(m, tuple))]
        assert roles == ["outputs", "file:model"]
        client.close()


def test_a_worker_that_dies_mid_job_fails_that_job_only(engine_server, tmp_path):
    pid = latest_worker_pid(engine_server)
    client = RawClient(engine_server.url)
    client.upload("doomed", "inputs", npz_bytes(sphere_inputs(), tmp_path))
    client.send(job_message("doomed", "fit", tiny_fit(100_000)))
    while not (isinstance(message := client.next(), dict) and message["type"] == "progress"):
        pass
    mark = len(engine_server.lines)
    os.kill(pid, 9)
    end, _ = client.until_end("doomed")
    assert end["type"] == "error" and "worker ended unexpectedly (killed by SIGKILL)" in end["message"]
    engine_server.wait_for(r"worker 0 ready", since=mark)
    client.upload("after", "param:model", LEGACY_MODEL.read_bytes())
    client.send(job_message("after", "extract", {"model": "m.pt", "resolution": 16, "device": "cpu"}))
    assert client.until_end("after")[0]["type"] == "result"
    client.close()


def test_a_server_stopped_mid_job_fails_the_session_with_what_happened(tmp_path):
    stopping = ServerUnderTest(tmp_path, token=None)
    try:

        def stop_once_training(session):
            if session.progress is not None and session.progress.step > 0 and stopping.process.poll() is None:
                stopping.process.terminate()

        request = JobRequest("fit", tiny_fit(100_000), sphere_inputs(), "fitting 'Sphere'")
        session = run_session(relay_launch(stopping.url, ""), [request], tmp_path / "jobs", stop_once_training)
        assert session.state is SessionState.FAILED
        assert session.message == (
            f"The remote engine at {stopping.url} closed the connection (it was stopped or restarted) while a job "
            "ran. Nothing in the scene was changed; try again"
        )
        session.close()
    finally:
        assert stopping.stop() == 0, stopping.log()
    assert not stopping.root.exists()


# The relay on its own, against a stand-in server (no torch needed).


class StandInServer:
    """A WebSocket server on a thread that sends one hello (of ``version``) and then only listens."""

    def __init__(self, version: int = protocol.PROTOCOL_VERSION, context: ssl.SSLContext | None = None):
        hello = {**protocol.hello("0.1.0", "3.11", "1", "2", None), "protocol": version, "server": True}

        def handler(connection):
            connection.send(json.dumps(hello))
            for _ in connection:
                pass

        self.server = serve(handler, "127.0.0.1", 0, ssl=context)
        self.url = f"{'wss' if context else 'ws'}://127.0.0.1:{self.server.socket.getsockname()[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def run_relay(url: str, *python_flags: str, **variables: str) -> tuple[list[dict], str, int]:
    """The relay, given end of input after its first message: its messages, its log and its exit code."""
    environment = {**os.environ, protocol.REMOTE_URL_VARIABLE: url, protocol.REMOTE_TOKEN_VARIABLE: "", **variables}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    process = subprocess.Popen([sys.executable, *python_flags, "-m", REMOTE_RELAY_MODULE], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    log: list[str] = []
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    threading.Thread(target=lambda: log.extend(process.stderr), daemon=True).start()
    try:
        first = json.loads(lines.get(timeout=60))
        process.stdin.close()
        code = process.wait(timeout=30)
    finally:
        process.kill()
    time.sleep(0.2)  # the log's last lines
    return [first], "".join(log), code


def test_the_relay_refuses_a_server_of_another_protocol():
    stand_in = StandInServer(version=protocol.PROTOCOL_VERSION + 1)
    try:
        (message,), _, code = run_relay(stand_in.url)
    finally:
        stand_in.close()
    assert code == 1 and message == protocol.error(
        None, f"The remote engine at {stand_in.url} speaks protocol 3, this add-on speaks 2: install the same release "
        "on both machines",
    )  # fmt: skip


def test_the_relay_says_when_nothing_listens_there():
    stand_in = StandInServer()
    url = stand_in.url
    stand_in.close()  # the port is free again: nothing listens
    (message,), _, code = run_relay(url)
    assert code == 1 and message["type"] == "error" and message["job"] is None
    assert message["message"] == (
        f"Could not reach the remote engine at {url}: connection refused. Is `python -m engine serve` running there?"
    )


def test_the_relay_imports_neither_numpy_nor_torch():
    stand_in = StandInServer()
    try:
        (hello,), log, code = run_relay(stand_in.url, "-X", "importtime")
    finally:
        stand_in.close()
    assert hello["type"] == "hello" and hello["remote"] == stand_in.url and code == 0
    imported = {line.split("|")[-1].strip() for line in log.splitlines() if line.startswith("import time:")}
    assert {"websockets", "engine.remote.frames", "engine.protocol"} <= imported
    assert not {name for name in imported if name.split(".")[0] in ("numpy", "torch")}


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM), made by the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a certificate with")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    return cert, key


def test_wss_is_verified_against_the_system_or_the_given_authority(certificate):
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    stand_in = StandInServer(context=context)
    try:
        (trusted,), _, code = run_relay(stand_in.url, **{protocol.REMOTE_CAFILE_VARIABLE: str(cert)})
        assert trusted["type"] == "hello" and code == 0
        (refused,), _, code = run_relay(stand_in.url)
        assert code == 1 and refused["type"] == "error"
        assert refused["message"].startswith(f"The remote engine at {stand_in.url} presented a certificate that could "
                                             "not be verified (self-signed certificate)")  # fmt: skip
    finally:
        stand_in.close()


# Slower: servers of their own.


def latest_worker_pid(process: ServerUnderTest) -> int:
    return next(int(match.group(1)) for line in reversed(process.lines)
                if (match := re.search(r"worker \d ready \(pid (\d+)", line)))  # fmt: skip


@pytest.mark.slow
def test_a_silent_worker_is_stopped_and_a_fresh_one_serves_the_next_job(tmp_path):
    silent = ServerUnderTest(tmp_path, "--hang-timeout", "5")
    try:
        client = RawClient(silent.url)
        client.upload("stuck", "inputs", npz_bytes(sphere_inputs(), tmp_path))
        client.send(job_message("stuck", "fit", tiny_fit(100_000)))
        while client.next()["type"] != "progress":
            pass
        mark = len(silent.lines)
        os.kill(latest_worker_pid(silent), signal.SIGSTOP)
        end, _ = client.until_end("stuck")  # heartbeats from the server go on meanwhile
        assert end["type"] == "error" and "stopped responding (no message for 5 s)" in end["message"]
        silent.wait_for(r"worker 0 ready", since=mark)
        client.upload("after", "param:model", LEGACY_MODEL.read_bytes())
        client.send(job_message("after", "extract", {"model": "m.pt", "resolution": 16, "device": "cpu"}))
        assert client.until_end("after")[0]["type"] == "result"
        client.close()
    finally:
        assert silent.stop() == 0, silent.log()


@pytest.mark.slow
def test_two_workers_serve_two_clients_side_by_side(tmp_path):
    pair = ServerUnderTest(tmp_path, "--workers", "2")
    try:
        clients = [RawClient(pair.url) for _ in range(2)]
        assert clients[0].hello["workers"] == 2 and len(clients[0].hello["devices"]) == 2
        for client in clients:
            client.upload("j", "inputs", npz_bytes(sphere_inputs(), tmp_path))
            client.send(job_message("j", "fit", tiny_fit(40)))
        for client in clients:
            assert client.until_end("j")[0]["type"] == "result"
            client.close()
        pair.wait_for(r"c1: job 'j' \(fit\) started on worker 0")
        pair.wait_for(r"c2: job 'j' \(fit\) started on worker 1")
    finally:
        assert pair.stop() == 0, pair.log()


@pytest.mark.slow
def test_a_tls_server_serves_the_addons_client(certificate, tmp_path):
    cert, key = certificate
    secure = ServerUnderTest(tmp_path, "--certfile", str(cert), "--keyfile", str(key), "--host", "127.0.0.1",
                             url_scheme="wss")  # fmt: skip
    try:
        launch = relay_launch(secure.url)
        launch = WorkerLaunch(launch.python, launch.engine_root, {**launch.extra_env,
                              protocol.REMOTE_CAFILE_VARIABLE: str(cert)}, module=launch.module)  # fmt: skip
        session = run_session(launch, [], tmp_path / "jobs")
        assert session.state is SessionState.SUCCEEDED, session.message
        assert session.hello["remote"].startswith("wss://127.0.0.1:")
        session.close()
    finally:
        assert secure.stop() == 0, secure.log()


def test_the_job_folders_of_a_killed_server_are_removed_by_the_next(tmp_path):
    folders = {name: tmp_path / f"{server.ROOT_PREFIX}{name}" for name in ("killed", "running", "unmarked")}
    for folder in folders.values():
        folder.mkdir()
    (folders["killed"] / server.ROOT_MARKER).write_text(str(2**22 + 1))  # above any process id Linux gives
    (folders["running"] / server.ROOT_MARKER).write_text(str(os.getpid()))
    server.remove_stale_roots(tmp_path)
    assert not folders["killed"].exists() and folders["running"].exists() and folders["unmarked"].exists()
