"""`swarm-operator run …`: parse flags, log in (failing at once when that is impossible), start
metrics, hand over to kopf."""

from __future__ import annotations

import sys

# kopf imports the `kubernetes` client whenever it is installed, only to recognise its model
# classes: ~31 MiB resident that this process never uses (credentials come from the client's
# loaders in a child process, login.py; kube.py speaks plain JSON). Hide it here.
sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]

import asyncio  # noqa: E402
import logging  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import kopf  # noqa: E402
import urllib3  # noqa: E402
from prometheus_client import start_http_server  # noqa: E402

from swarm_operator import handlers  # noqa: E402
from swarm_operator.config import OperatorConfig, from_args  # noqa: E402
from swarm_operator.kube import KubeClient  # noqa: E402
from swarm_operator.kube_http import ApiError  # noqa: E402
from swarm_operator.login import Login, LoginSource  # noqa: E402

log = logging.getLogger("swarm_operator")
RESOLV_CONF = Path("/etc/resolv.conf")


async def _operate(cfg: OperatorConfig) -> None:
    await kopf.operator(
        # Leader election is ours (a Lease); kopf's own peering needs extra CRDs and is not exclusive.
        standalone=True,
        clusterwide=cfg.all_namespaces,
        namespaces=list(cfg.namespaces),
        liveness_endpoint=f"http://0.0.0.0:{cfg.health_port}/healthz",
    )


def connect(cfg: OperatorConfig) -> KubeClient | str:
    """The API client, logged in and checked with the API server; else why not (for the user)."""
    login = Login(LoginSource(cfg.kubeconfig, cfg.context))
    kube = KubeClient(login, pool_size=cfg.api_threads)
    try:
        user = kube.whoami()
    except kopf.LoginError as exc:
        return f"cannot log in: {exc}"
    except ApiError as exc:
        return f"the API server refused our credentials ({exc}); check the kubeconfig user or service account"
    except urllib3.exceptions.HTTPError as exc:
        return f"cannot reach the API server {login.current().server}: {exc}"
    if user == "system:anonymous":
        return (f"the API server sees us as system:anonymous ({login.current().server}): the credentials "
                "were not accepted; check the kubeconfig user or service account")
    log.info("logged in as %s", user or "(the API server does not say: no SelfSubjectReview API)")
    return kube


def main(argv: Sequence[str] | None = None) -> int:
    resolv_conf = RESOLV_CONF.read_text(errors="replace") if RESOLV_CONF.is_file() else ""
    cfg = from_args(sys.argv[1:] if argv is None else argv, resolv_conf=resolv_conf)
    kopf.configure(verbose=cfg.log_level == "DEBUG")  # installs the one log handler
    logging.getLogger().setLevel(cfg.log_level)
    # kopf logs every handled watch event at INFO: thousands a minute with many pods.
    logging.getLogger("kopf.objects").setLevel(max(logging.WARNING, logging.getLevelName(cfg.log_level)))
    kube = connect(cfg)
    if isinstance(kube, str):
        log.error("%s", kube)
        return 2
    handlers.Runtime.config = cfg
    handlers.Runtime.kube = kube
    start_http_server(cfg.metrics_port)
    asyncio.run(_operate(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
