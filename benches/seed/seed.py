"""The seed design ztbridge replaces, for comparison benchmarks only.

What the vendor's integration guides paste: a Flask app that receives a
Superna Zero Trust webhook and forwards it to PagerDuty (Events API v2) with
`requests`, synchronously, one event at a time (Flask's own server, no
threads): no store, no retries, no sandbox.  Request logging is off, which
only makes the seed faster than the scripts it stands for.

    python3 benches/seed/seed.py --port 5100 --sink http://127.0.0.1:8088/v2/enqueue
"""

import argparse
import gzip
import json
import logging

import requests
from flask import Flask, request

ROUTING_KEY = "R0UTINGKEYabcdef0123456789abcdef"
SEVERITY = {"critical": "critical", "major": "error", "warning": "warning"}

app = Flask(__name__)
SINK = None


@app.route("/webhook", methods=["POST"])
def webhook():
    body = request.get_data()
    if request.headers.get("Content-Encoding", "").lower() == "gzip":
        body = gzip.decompress(body)
    event = json.loads(body)
    severity = SEVERITY.get(str(event.get("severity", "")).lower(), "info")
    pd = {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "superna-zt-%s" % event.get("id"),
        "payload": {
            "summary": "[%s] %s: %s" % (event.get("severity"), event.get("state"), event.get("user")),
            "source": event.get("cluster") or "superna",
            "severity": severity,
            "custom_details": {"received_event": event},
        },
    }
    r = requests.post(SINK, json=pd, timeout=30)
    return {"status": "forwarded", "pagerduty": r.status_code}, 202


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=5100)
    p.add_argument("--sink", required=True)
    a = p.parse_args()
    SINK = a.sink
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app.run(host="127.0.0.1", port=a.port, threaded=False)
