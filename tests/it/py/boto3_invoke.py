"""Invokes a natsfn function through the HTTP gateway with boto3, as a Lambda user
would: endpoint_url, dummy credentials. Prints one JSON object for the Rust test."""

import base64
import json
import sys

from gateway_client import lambda_client

endpoint, name = sys.argv[1], sys.argv[2]
client = lambda_client(endpoint)


def summary(response):
    return {
        "status": response["StatusCode"],
        "function_error": response.get("FunctionError"),
        "version": response.get("ExecutedVersion"),
        "payload": response["Payload"].read().decode(),
    }


out = {}
out["ok"] = summary(client.invoke(FunctionName=name, Payload=json.dumps({"n": 1})))
out["error"] = summary(client.invoke(FunctionName=name, Payload=json.dumps({"fail": True})))
out["event"] = summary(
    client.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"n": 2}))
)
# A line printed just before the answer can reach the node after it (stdout is a
# pipe, the answer a socket; under load their order is not guaranteed), and Tail
# stops at REPORT: up to three tries for the line, each one asserted in full.
for _ in range(3):
    tail = client.invoke(FunctionName=name, LogType="Tail", Payload=json.dumps({"n": 3}))
    out["tail"] = summary(tail)
    out["tail"]["log"] = base64.b64decode(tail["LogResult"]).decode()
    if "invoked with 3\n" in out["tail"]["log"]:
        break
try:
    client.invoke(FunctionName="missing-function", Payload=b"{}")
    out["missing"] = "no error"
except client.exceptions.ResourceNotFoundException as e:
    out["missing"] = e.response["Error"]["Code"] + ": " + e.response["Error"]["Message"]
print(json.dumps(out))
