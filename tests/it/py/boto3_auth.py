"""Invokes natsfn functions through a gateway started with --http-auth, with boto3 as a
Lambda user would: a configured key, endpoint_url. Prints one JSON object for the Rust
test: each call's payload, or the error code and message boto3 raised.

usage: boto3_auth.py ENDPOINT CA_BUNDLE|- CALLS_JSON
CALLS_JSON: [{"name": ..., "key": ..., "secret": ..., "function": ...}, ...]"""

import json
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, ca_bundle, calls = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
out = {}
for call in calls:
    client = boto3.client(
        "lambda",
        endpoint_url=endpoint,
        region_name="eu-west-1",
        aws_access_key_id=call["key"],
        aws_secret_access_key=call["secret"],
        verify=None if ca_bundle == "-" else ca_bundle,
        config=Config(retries={"max_attempts": 1}),
    )
    try:
        response = client.invoke(FunctionName=call["function"], Payload=json.dumps({"n": 1}))
        out[call["name"]] = {
            "status": response["StatusCode"],
            "payload": response["Payload"].read().decode(),
        }
    except ClientError as e:
        out[call["name"]] = {
            "status": e.response["ResponseMetadata"]["HTTPStatusCode"],
            "code": e.response["Error"]["Code"],
            "message": e.response["Error"]["Message"],
        }
print(json.dumps(out))
