"""`iexec-worker join --print compose` prints the README's compose steps with the worker's own files.

No service: the text printed for an ``.env`` as join writes it, read against the README and deploy/compose.yml.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.deploy import DEPLOY, README
from worker.ops.join import compose_service


def test_join_prints_the_readme_compose_steps_with_the_workers_files(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# Written by `iexec-worker join`\nIEXEC_WORKER_WALLET_PATH=/srv/w/wallet.json\n"
        "IEXEC_WORKER_WALLET_PASSWORD_FILE=/srv/w/wallet.password\nIEXEC_WORKER_BASE_DIR=/srv/iexec\n"
    )
    steps = [line for line in compose_service(env_file).splitlines() if not line.startswith("#")]
    readme = README.read_text()
    for step in steps[:-1]:
        as_in_readme = step.replace("/srv/w/wallet.json", "/secure/worker.json")
        assert as_in_readme.replace("/srv/w/wallet.password", "/secure/password") in readme, step
    assert steps[-1] == (
        f"WORKER_ENV_FILE={env_file} IEXEC_WORKER_BASE_DIR=/srv/iexec docker compose -f deploy/compose.yml up -d"
    )
    assert "iexec-worker join --print compose" in readme
    compose = (DEPLOY / "compose.yml").read_text()
    assert "env_file: ${WORKER_ENV_FILE:-../.env}" in compose
    assert (
        "${IEXEC_WORKER_BASE_DIR:-/var/lib/iexec-worker}:${IEXEC_WORKER_BASE_DIR:-/var/lib/iexec-worker}"
        in compose
    )
