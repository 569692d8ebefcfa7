"""The python3 bootstrap's channel codec (_natsfn_wire) against the golden frames.

protocol/tests/frames/golden.json (or NATSFN_GOLDEN_FRAMES) holds frames as the node
writes and reads them. The bootstrap reads every frame the node may send (Invoke) as
the golden bytes say, through the very function it reads its channel with; it writes
every frame it sends (Ready, InitError, Response, Error, RequestError) as exactly the
golden bytes, through the very functions it writes them with; and its generic decoder
reads back every canonical frame. Run: python3 runtimes/python3/tests/test_wire.py
(tests/it/golden_frames.rs runs it in the integration tests). Standard library only.
"""

import io
import json
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import _natsfn_wire as wire  # noqa: E402

GOLDEN = os.environ.get("NATSFN_GOLDEN_FRAMES") or os.path.join(
    HERE, "..", "..", "..", "protocol", "tests", "frames", "golden.json"
)
INVOKE_FIELDS = ("id", "deadline_ms", "timeout_ms", "invoked_function_arn", "payload")


def value(meaning):
    """A golden meaning as Python values: {"$bin": hex} is bytes, key order kept."""
    if isinstance(meaning, dict):
        if list(meaning) == ["$bin"]:
            return bytes.fromhex(meaning["$bin"])
        return {k: value(v) for k, v in meaning.items()}
    if isinstance(meaning, list):
        return [value(v) for v in meaning]
    return meaning


def load():
    with open(GOLDEN, encoding="utf-8") as f:
        doc = json.load(f)
    vectors = []
    for v in doc["vectors"]:
        ((kind, fields),) = value(v["frame"]).items()
        vectors.append(
            dict(
                name=v["name"],
                to_worker=v["direction"] == "to_worker",
                canonical=v["canonical"],
                kind=kind,
                fields=fields,
                bytes=bytes.fromhex("".join(v["hex"].split())),
            )
        )
    return vectors


VECTORS = load()


def reader(data):
    return io.BufferedReader(io.BytesIO(data))


def invoke_fields(inv):
    """The fields of an Invoke as the bootstrap reads them."""
    return {
        "id": inv.id,
        "deadline_ms": inv.deadline_ms,
        "timeout_ms": inv.timeout_ms,
        "invoked_function_arn": inv.arn,
        "payload": bytes(inv.payload),
    }


def written(send):
    """The bytes `send(fd)` writes to a channel."""
    r, w = os.pipe()
    try:
        send(w)
        os.close(w)
        w = None
        out = b""
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                return out
            out += chunk
    finally:
        os.close(r)
        if w is not None:
            os.close(w)


def send_as_the_bootstrap_does(kind, fields):
    """The writer bootstrap.py uses for each frame type it sends."""
    fields = dict(fields)
    if kind == "Response":
        return lambda fd: wire._send_response(fd, fields["id"], fields["payload"])
    if kind in ("InitError", "Error"):
        return lambda fd: wire._send_error(fd, kind, fields)
    return lambda fd: wire._send(fd, kind, fields)


class GoldenFrames(unittest.TestCase):
    def test_there_are_vectors_of_both_directions(self):
        self.assertGreaterEqual(len([v for v in VECTORS if v["to_worker"]]), 5)
        self.assertGreaterEqual(len([v for v in VECTORS if not v["to_worker"]]), 5)

    def test_every_invoke_frame_is_read_as_the_golden_fields(self):
        for v in (v for v in VECTORS if v["to_worker"]):
            with self.subTest(v["name"]):
                # Twice: the second read takes the path of a frame whose fixed tail
                # (timeout, ARN) was seen before.
                for _ in range(2):
                    kind, inv = wire._read_frame(reader(v["bytes"]))
                    self.assertEqual(kind, v["kind"])
                    self.assertEqual(invoke_fields(inv), v["fields"])
                    if inv.raw_id is not None:
                        parts = []
                        wire._pack(inv.id, parts)
                        self.assertEqual(bytes(inv.raw_id), b"".join(parts))

    def test_a_stream_of_every_invoke_frame_is_read_in_order(self):
        frames = [v for v in VECTORS if v["to_worker"]]
        rf = reader(b"".join(v["bytes"] for v in frames))
        for v in frames:
            kind, inv = wire._read_frame(rf)
            self.assertEqual((kind, invoke_fields(inv)), (v["kind"], v["fields"]), v["name"])
        self.assertIsNone(wire._read_frame(rf), "a clean end of the stream")

    def test_every_frame_the_bootstrap_sends_is_written_as_the_golden_bytes(self):
        sent = [v for v in VECTORS if not v["to_worker"] and v["canonical"]]
        self.assertEqual(
            sorted({v["kind"] for v in sent}),
            ["Error", "InitError", "Ready", "RequestError", "Response"],
        )
        for v in sent:
            with self.subTest(v["name"]):
                out = written(send_as_the_bootstrap_does(v["kind"], v["fields"]))
                self.assertEqual(out.hex(), v["bytes"].hex())

    def test_a_response_reusing_the_invokes_encoded_id_is_the_same_frame(self):
        for v in (v for v in VECTORS if v["kind"] == "Response" and v["canonical"]):
            with self.subTest(v["name"]):
                parts = []
                wire._pack(v["fields"]["id"], parts)
                raw_id = b"".join(parts)
                f = v["fields"]
                out = written(lambda fd: wire._send_response(fd, f["id"], f["payload"], raw_id))
                self.assertEqual(out.hex(), v["bytes"].hex())

    def test_every_canonical_frame_decodes_to_its_meaning(self):
        for v in (v for v in VECTORS if v["canonical"]):
            with self.subTest(v["name"]):
                body = v["bytes"][4:]
                self.assertEqual(int.from_bytes(v["bytes"][:4], "big"), len(body))
                self.assertEqual(wire.unpackb(body), {v["kind"]: v["fields"]})


if __name__ == "__main__":
    unittest.main(verbosity=2)
