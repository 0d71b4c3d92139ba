"""`swarm-operator run …`: parse flags, start metrics, hand over to kopf."""

from __future__ import annotations

import sys

# kopf imports the `kubernetes` client whenever it is installed, only to recognise its model
# classes: ~25 MiB resident that this operator never uses (kube.py speaks plain JSON). Hide it,
# so the operator weighs the same where the tests installed the client as in the image.
sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]

import asyncio  # noqa: E402
import logging  # noqa: E402
from collections.abc import Sequence  # noqa: E402

import kopf  # noqa: E402
from prometheus_client import start_http_server  # noqa: E402

from swarm_operator import handlers  # noqa: E402
from swarm_operator.config import OperatorConfig, from_args  # noqa: E402


async def _operate(cfg: OperatorConfig) -> None:
    await kopf.operator(
        # Leader election is ours (a Lease); kopf's own peering needs extra CRDs and is not exclusive.
        standalone=True,
        clusterwide=cfg.all_namespaces,
        namespaces=list(cfg.namespaces),
        liveness_endpoint=f"http://0.0.0.0:{cfg.health_port}/healthz",
    )


def main(argv: Sequence[str] | None = None) -> int:
    cfg = from_args(sys.argv[1:] if argv is None else argv)
    kopf.configure(verbose=cfg.log_level == "DEBUG")  # installs the one log handler
    logging.getLogger().setLevel(cfg.log_level)
    # kopf logs every handled watch event at INFO: thousands a minute with many pods.
    logging.getLogger("kopf.objects").setLevel(max(logging.WARNING, logging.getLevelName(cfg.log_level)))
    handlers.Runtime.config = cfg
    start_http_server(cfg.metrics_port)
    asyncio.run(_operate(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
