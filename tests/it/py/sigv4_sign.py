"""Signs one HTTP request with botocore's SigV4 signer for service "lambda", as awscurl
and the AWS SDKs sign a function URL request, and prints the headers to send (JSON).

usage: sigv4_sign.py METHOD URL BODY ACCESS_KEY_ID SECRET [yyyyMMddTHHmmssZ]
The optional time is the signer's clock (the skew tests); the default is now."""

import datetime
import json
import sys
from unittest import mock

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

method, url, body, key_id, secret = sys.argv[1:6]
request = AWSRequest(method=method, url=url, data=body.encode())
signer = SigV4Auth(Credentials(key_id, secret), "lambda", "eu-west-1")
if len(sys.argv) > 6:
    when = datetime.datetime.strptime(sys.argv[6], "%Y%m%dT%H%M%SZ")
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        signer.add_auth(request)
else:
    signer.add_auth(request)
print(json.dumps(dict(request.headers.items())))
