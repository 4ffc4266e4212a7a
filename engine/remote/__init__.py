"""The remote engine: jobs of a Blender add-on run on another machine's workers, over one WebSocket per add-on.

- ``python -m engine serve`` (`engine.remote.server`) runs ``python -m engine.worker`` processes on the machine with
  the GPU and relays the worker protocol (`engine.protocol`) to every client that connects.
- ``python -m engine.remote.relay`` (`engine.remote.relay`) runs where Blender runs, in place of a worker: it speaks
  the worker protocol on its stdin/stdout, so the add-on's client works unchanged, and moves each job's files over
  the connection. It needs only the standard library and ``websockets``.

Transport (WebSocket messages, client to server and back):

- Text messages: the protocol's JSON messages (`engine.protocol.encode`, one object each). The server sends a
  ``hello`` as soon as a connection opens (its workers' versions, plus ``"server": true``, ``"workers": N``,
  ``"devices"``, ``"max_message_bytes"``, ``"max_pending_bytes"``), then ``alive`` every
  `engine.protocol.HEARTBEAT_INTERVAL_S` and each job's ``progress``/``result``/``error``/``cancelled``, with the
  client's own job ids. The client sends ``job`` and ``cancel``; a job's ``dir`` is ignored, and each of its file
  params (`engine.protocol.MODEL_FILE_PARAMS`) is replaced by the server's copy of the uploaded file.
- Binary messages: one file each (`engine.remote.frames`): a 4-byte big-endian header length H, H bytes of UTF-8
  JSON ``{"job": ID, "role": ROLE, "size": N, "name": NAME}``, then N bytes; sent in fragments of
  `frames.FRAGMENT_BYTES` so keepalive pings pass. Client to server, before the job message that uses them:
  ``inputs`` (the job's ``inputs.npz``), ``param:<name>`` (the file of a file param, e.g. ``param:model``). Server to
  client, before the message that names them: ``preview`` (``preview.npz``, before the progress message bearing the
  new preview number), ``outputs`` (``outputs.npz``) and ``file:<role>`` for each of a result's ``files``
  (``file:model``), before the result (which names them as a worker does: plain file names).
- The opening handshake carries the token as ``Authorization: Bearer <token>``; without the right one the server
  answers HTTP 401 and nothing else.
- Limits: a message of more than the server's ``max_message_bytes`` closes the connection (1009); so do uploads of
  unfinished jobs over ``max_pending_bytes`` (an error message first). A binary message that breaks the framing
  closes the connection with 1008, after an error message saying why; a text message that is no protocol message,
  or a job the server cannot run, gets an error and the connection stays.
- Jobs of one connection run one at a time per worker, first come first served with the other clients'; closing
  the connection drops its waiting jobs and cancels its running one.
"""
