"""Invokes a function's versions and aliases through the HTTP gateway with boto3, as a
Lambda user would (Qualifier=, name:qualifier). Prints one JSON object for the Rust test."""

import json
import sys

from gateway_client import lambda_client

endpoint, name = sys.argv[1], sys.argv[2]
client = lambda_client(endpoint)


def summary(response):
    return {
        "status": response["StatusCode"],
        "version": response.get("ExecutedVersion"),
        "payload": json.loads(response["Payload"].read().decode()),
    }


out = {
    "alias": summary(client.invoke(FunctionName=name, Qualifier="live")),
    "version": summary(client.invoke(FunctionName=name, Qualifier="2")),
    "named": summary(client.invoke(FunctionName=f"{name}:live")),
    "latest": summary(client.invoke(FunctionName=name)),
}
try:
    client.invoke(FunctionName=name, Qualifier="nope")
    out["missing"] = None
except client.exceptions.ResourceNotFoundException as e:
    out["missing"] = str(e)
print(json.dumps(out))
