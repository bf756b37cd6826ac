"""Records every REST call chart_studio makes, without changing it: `(method, path, status, body)`.

chart_studio's v2 calls go through `requests.request`, which opens a `requests.Session` per call.
"""

import json
import urllib.parse

import requests

calls = []

_original_request = requests.Session.request


def _recording_request(self, method, url, *args, **kwargs):
    response = _original_request(self, method, url, *args, **kwargs)
    try:
        body = response.json()
    except ValueError:
        body = None
    calls.append((method.upper(), urllib.parse.urlsplit(url).path, response.status_code, body))
    return response


requests.Session.request = _recording_request


def take():
    """The calls since the last `take()`, as `(method, path, status)`, and their answers' bodies."""
    taken = list(calls)
    del calls[:]
    return [call[:3] for call in taken], [call[3] for call in taken]


def describe(sequence):
    return json.dumps(sequence)
