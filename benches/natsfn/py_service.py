"""What a Python user would write instead of natsfn: a nats-py service that runs the
same handler in one process, JSON in and JSON out. Usage: py_service.py URL SUBJECT CODE_DIR"""
import asyncio
import importlib
import json
import sys
import uuid

import nats


class Context:
    function_name = "pyservice"
    function_version = "1"
    invoked_function_arn = "arn:aws:lambda:local:000000000000:function:pyservice"
    memory_limit_in_mb = 128
    log_group_name = "/aws/lambda/pyservice"
    log_stream_name = "pyservice"

    def __init__(self):
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self):
        return 3000


async def main(url, subject, code_dir):
    sys.path.insert(0, code_dir)
    handler = importlib.import_module("app").handler
    nc = await nats.connect(url)

    async def serve(msg):
        event = json.loads(msg.data) if msg.data else {}
        result = handler(event, Context())
        await msg.respond(json.dumps(result).encode())

    await nc.subscribe(subject, queue="pyservice", cb=serve)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
