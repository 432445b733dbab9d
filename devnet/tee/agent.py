"""EMULATED TDX secret provider agent: writes a task's session file from the emulated secret broker.

The worker runs the real agent as ``secret_provider_agent -e <url> -i <sessionId> -s <file> -v <verifier>``
in the task folder (iexec-worker ``TeeTdxService``); the agent's protocol with iExec's secret broker is not
public, and attestation needs a real TD. This stand-in, standard library only, asks the devnet's emulated
SMS for ``GET <url>/sessions/<sessionId>`` and writes the answer, a ``TdxSession``, to ``<file>``. Exit
codes: 0 written, 1 no session, 64 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="secret_provider_agent", description="EMULATED TDX secret provider agent"
    )
    parser.add_argument("-e", dest="url", required=True, help="secret provisioning URL")
    parser.add_argument("-i", dest="session_id", required=True, help="session id")
    parser.add_argument("-s", dest="file", required=True, help="session file to write in the current folder")
    parser.add_argument("-v", dest="verifier", default="nullverifier", help="attestation verifier (ignored)")
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        return 64
    url = f"{args.url.rstrip('/')}/sessions/{args.session_id}"
    print(
        f"emulated secret provider agent: fetching session {args.session_id} (verifier {args.verifier}: no attestation)"
    )
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            session = json.loads(answer.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"emulated secret provider agent: no session from {args.url}: {exc}", file=sys.stderr)
        return 1
    Path(args.file).write_text(json.dumps(session))
    print(f"emulated secret provider agent: wrote {args.file} ({len(session.get('services', []))} services)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
