"""A boto3 Lambda client for natsfn's HTTP gateway, as a Lambda user makes one:
endpoint_url, dummy credentials (a gateway without --http-auth checks none), one try."""

import boto3
from botocore.config import Config


def lambda_client(endpoint):
    return boto3.client(
        "lambda",
        endpoint_url=endpoint,
        region_name="eu-west-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="not-a-secret",
        config=Config(retries={"max_attempts": 1}),
    )
