"""GCS fault tolerance on Redis (rediss://, redisCA, redisUsername, the key cleanup on deletion) and a Ray
token per cluster (spec.auth): the spec, the builders, the deletion decisions, and the controller's turn
against the fake API server."""

from __future__ import annotations

import asyncio
import base64
import copy
from typing import Any

import pytest

from swarm_operator import finalizer as finalizer_module
from swarm_operator import ray_token as ray_token_module
from swarm_operator import turn as turn_module
from swarm_operator.config import OperatorConfig
from swarm_operator.controller import Controller
from swarm_operator.reconcile import deletion
from swarm_operator.reconcile.deletion import FINALIZER, DeletionStep, JobState, deletion_step, job_state
from swarm_operator.reconcile.disruption import NodeState
from swarm_operator.reconcile.observe import observe_pod
from swarm_operator.resources import revision
from swarm_operator.resources.pods import build_head_pod, build_worker_pod
from swarm_operator.resources.redis_cleanup import build_cleanup_job
from swarm_operator.resources.token import build_token_secret, token_of
from swarm_operator.spec.reader import SpecError
from swarm_operator.spec.types import KeyRef
from tests.unit.operator_fixtures import (
    NAMESPACE,
    NOW,
    UID,
    FakeKube,
    FixedClock,
    as_kube,
    cluster,
    head,
    head_pod,
    iso,
    manifest,
)

GCS = {"redisAddress": "rediss://redis.db:6380", "redisUsername": "ray",
       "redisPasswordSecret": {"name": "redis-auth", "key": "password"},
       "redisCA": {"configMapName": "redis-ca", "key": "ca.pem"}}


def ft(**gcs: Any) -> dict[str, Any]:
    return {"faultTolerance": {"gcs": gcs}}


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["spec"]["containers"][0]["env"]}


# -- spec ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("address", "tls"), [("redis:6379", False), ("redis://redis:6379", False),
                                              ("rediss://redis.db.svc:6380", True)])
def test_redis_addresses_ray_accepts(address: str, tls: bool) -> None:
    gcs = cluster(ft(redisAddress=address)).fault_tolerance.gcs
    assert gcs is not None and (gcs.redis_address, gcs.tls) == (address, tls)


def test_redis_ca_username_and_cleanup_timeout_are_read() -> None:
    gcs = cluster(ft(**GCS, cleanupTimeoutSeconds=60)).fault_tolerance.gcs
    assert gcs is not None
    assert (gcs.redis_username, gcs.redis_ca, gcs.cleanup_timeout_seconds) == (
        "ray", KeyRef("ConfigMap", "redis-ca", "ca.pem"), 60)
    default = cluster(ft(redisAddress="rediss://r:1", redisCA={"secretName": "tls"})).fault_tolerance.gcs
    assert default is not None and default.redis_ca == KeyRef("Secret", "tls", "ca.crt")
    assert default.cleanup_timeout_seconds == 300


@pytest.mark.parametrize(("gcs", "path"), [
    ({"redisAddress": "http://redis:6379"}, "spec.faultTolerance.gcs.redisAddress"),
    ({"redisAddress": "rediss://redis"}, "spec.faultTolerance.gcs.redisAddress"),
    ({"redisAddress": "redis:6379", "redisUsername": "a user"}, "spec.faultTolerance.gcs.redisUsername"),
    ({"redisAddress": "redis:6379", "redisCA": {"secretName": "ca"}}, "spec.faultTolerance.gcs.redisCA"),
    ({"redisAddress": "rediss://redis:6379", "redisCA": {"key": "ca.crt"}}, "spec.faultTolerance.gcs.redisCA"),
    ({"redisAddress": "rediss://redis:6379", "redisCA": {"secretName": "a", "configMapName": "b"}},
     "spec.faultTolerance.gcs.redisCA"),
    ({"redisAddress": "rediss://redis:6379", "redisCA": {"secretName": "Bad_Name"}},
     "spec.faultTolerance.gcs.redisCA.secretName"),
    ({"redisAddress": "redis:6379", "cleanupTimeoutSeconds": 5}, "spec.faultTolerance.gcs.cleanupTimeoutSeconds"),
], ids=["scheme", "no-port", "username-space", "ca-without-tls", "ca-no-source", "ca-two-sources", "ca-bad-name",
        "timeout-too-short"])
def test_bad_redis_settings_name_their_field(gcs: dict[str, Any], path: str) -> None:
    with pytest.raises(SpecError) as info:
        cluster(ft(**gcs))
    assert path in [e.path for e in info.value.errors], str(info.value)


def test_redis_username_is_an_operator_flag() -> None:
    with pytest.raises(SpecError) as info:
        cluster({"head": {"rayStartParams": {"redis-username": "x"}}})
    assert [e.path for e in info.value.errors] == ["spec.head.rayStartParams.redis-username"]


def test_auth() -> None:
    assert cluster().auth is None
    assert cluster({"auth": {"mode": "disabled"}}).auth is None
    made = cluster({"auth": {"mode": "token"}}).auth
    assert made is not None and (made.secret_name, made.secret_key, made.operator_made) == (
        "demo-ray-token", "token", True)
    given = cluster({"auth": {"mode": "token", "tokenSecret": {"name": "mine", "key": "t"}}}).auth
    assert given is not None and (given.secret_name, given.secret_key, given.operator_made) == ("mine", "t", False)


@pytest.mark.parametrize(("auth", "path"), [
    ({"mode": "Token"}, "spec.auth.mode"),
    ({"tokenSecret": {"name": "mine"}}, "spec.auth.tokenSecret"),
    ({"mode": "token", "tokenSecret": {"name": "Mine"}}, "spec.auth.tokenSecret.name"),
])
def test_bad_auth_names_its_field(auth: dict[str, Any], path: str) -> None:
    with pytest.raises(SpecError) as info:
        cluster({"auth": auth})
    assert path in [e.path for e in info.value.errors], str(info.value)


# -- pods, hashes, the Job, the Secret --------------------------------------------------------------


def test_the_head_reaches_redis_over_tls_with_its_user_and_ca() -> None:
    c = cluster(ft(**GCS))
    pod = build_head_pod(c)
    ray = pod["spec"]["containers"][0]
    env = env_of(pod)
    assert env["RAY_REDIS_ADDRESS"] == "rediss://redis.db:6380"
    assert env["RAY_external_storage_namespace"] == UID
    assert env["RAY_REDIS_CA_CERT"] == "/run/swarm/redis-ca/ca.crt"
    assert "--redis-username=ray" in ray["args"] and "--redis-password=$(REDIS_PASSWORD)" in ray["args"]
    assert {"name": "redis-ca", "mountPath": "/run/swarm/redis-ca", "readOnly": True} in ray["volumeMounts"]
    assert {"name": "redis-ca", "configMap": {"name": "redis-ca", "items": [{"key": "ca.pem", "path": "ca.crt"}]}} \
        in pod["spec"]["volumes"]
    worker = build_worker_pod(c, c.worker_groups[0], "abcde")
    assert "RAY_REDIS_CA_CERT" not in env_of(worker), "only the head's GCS talks to Redis"


def test_a_template_volume_of_the_same_name_does_not_replace_the_ca() -> None:
    c = cluster({**ft(**GCS), "head": {"template": {"spec": {"volumes": [{"name": "redis-ca", "emptyDir": {}}]}}}})
    volumes = [v for v in build_head_pod(c)["spec"]["volumes"] if v["name"] == "redis-ca"]
    assert volumes == [{"name": "redis-ca", "configMap": {"name": "redis-ca",
                                                          "items": [{"key": "ca.pem", "path": "ca.crt"}]}}]


def test_token_auth_env_on_every_pod() -> None:
    c = cluster({"auth": {"mode": "token"}})
    ref = {"secretKeyRef": {"name": "demo-ray-token", "key": "token"}}
    for pod in (build_head_pod(c), build_worker_pod(c, c.worker_groups[0], "abcde")):
        env = env_of(pod)
        assert (env["RAY_AUTH_MODE"], env["RAY_AUTH_TOKEN"]) == ("token", ref)
    assert "RAY_AUTH_MODE" not in env_of(build_head_pod(cluster()))


def test_hashes_auth_restarts_and_the_cleanup_timeout_does_not() -> None:
    base = cluster(ft(redisAddress="redis:6379"))
    assert "auth" not in revision.head_parts(base), "clusters without auth keep their hashes"
    with_auth = cluster({**ft(redisAddress="redis:6379"), "auth": {"mode": "token"}})
    assert revision.changed_parts(revision.part_hashes(revision.head_parts(base)),
                                  revision.head_parts(with_auth)) == ["auth"]
    longer = cluster(ft(redisAddress="redis:6379", cleanupTimeoutSeconds=900))
    assert revision.head_parts(longer) == revision.head_parts(base)
    user = cluster(ft(redisAddress="redis:6379", redisUsername="u"))
    assert revision.changed_parts(revision.part_hashes(revision.head_parts(base)),
                                  revision.head_parts(user)) == ["gcsFaultTolerance"]


def test_the_cleanup_job_runs_rays_cleanup_with_the_heads_redis_settings_where_the_head_may_run() -> None:
    placement = {"nodeSelector": {"pool": "a"}, "tolerations": [{"key": "t", "operator": "Exists"}],
                 "hostNetwork": True}
    c = cluster({**ft(**GCS, cleanupTimeoutSeconds=120), "head": {"template": {"spec": placement}}})
    job = build_cleanup_job(c)
    assert job["metadata"]["name"] == "demo-redis-cleanup"
    assert job["metadata"]["ownerReferences"][0]["uid"] == UID
    assert job["spec"]["activeDeadlineSeconds"] == 180, "past the operator's own deadline"
    pod = job["spec"]["template"]["spec"]
    assert (pod["nodeSelector"], pod["tolerations"], pod["restartPolicy"]) == (
        placement["nodeSelector"], placement["tolerations"], "Never")
    assert "hostNetwork" not in pod, "only where it runs, not how"
    container = pod["containers"][0]
    assert container["image"] == c.image and "cleanup_redis_storage" in container["command"][2]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["RAY_REDIS_ADDRESS"] == "rediss://redis.db:6380"
    assert env["RAY_external_storage_namespace"] == UID
    assert env["REDIS_USERNAME"] == "ray"
    assert env["REDIS_PASSWORD"] == {"secretKeyRef": {"name": "redis-auth", "key": "password"}}
    assert env["RAY_REDIS_CA_CERT"] == "/run/swarm/redis-ca/ca.crt"
    assert pod["volumes"][0]["configMap"]["name"] == "redis-ca"
    compile(container["command"][2], "cleanup", "exec")  # the script is valid Python


def test_the_token_secret() -> None:
    c = cluster({"auth": {"mode": "token"}})
    secret = build_token_secret(c, "abc123")
    assert secret["metadata"]["name"] == "demo-ray-token"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == UID
    assert token_of(secret, "token") == "abc123"
    assert token_of(secret, "other") is None
    assert token_of({"data": {"token": base64.b64encode(b"  \n").decode()}}, "token") is None


# -- deletion decisions ------------------------------------------------------------------------------

GCS_SPEC = cluster(ft(redisAddress="redis:6379", cleanupTimeoutSeconds=60)).fault_tolerance.gcs


@pytest.mark.parametrize(("pods", "job", "waited", "want"), [
    ("head", None, 1, DeletionStep(delete_pods=("demo-head",), requeue_after=deletion.POLL_SECONDS)),
    ("head-deleting", None, 1, DeletionStep(requeue_after=deletion.POLL_SECONDS)),
    ("", None, 1, DeletionStep(create_job=True, requeue_after=deletion.POLL_SECONDS)),
    ("", JobState(), 30, DeletionStep(requeue_after=deletion.POLL_SECONDS)),
    ("", JobState(succeeded=True), 30, "RedisCleanedUp"),
    ("", JobState(failed=True, message="BackoffLimitExceeded"), 30, "RedisCleanupFailed"),
    ("", JobState(), 60, "RedisCleanupTimedOut"),
    ("head", None, 61, "RedisCleanupTimedOut"),
    ("head-stuck-on-a-lost-node", None, 1, DeletionStep(create_job=True, requeue_after=deletion.POLL_SECONDS)),
    ("head-on-a-lost-node", None, 1, DeletionStep(delete_pods=("demo-head",), create_job=True,
                                                   requeue_after=deletion.POLL_SECONDS)),
], ids=["delete-pods-first", "wait-for-pods", "run-the-job", "wait-for-the-job", "done", "job-failed",
        "timed-out", "timed-out-with-pods-left", "a-pod-stuck-on-a-lost-node-runs-nothing",
        "one-on-a-lost-node-deleted-and-not-waited-for"])
def test_deletion_steps(pods: str, job: JobState | None, waited: float, want: DeletionStep | str) -> None:
    lost = NodeState.gone("node-1")
    states = {"": [], "head": [head(cluster())], "head-deleting": [head(cluster(), deleting=True)],
              "head-stuck-on-a-lost-node": [observe_pod(head_pod(cluster(), deleting=True), lost, NOW)],
              "head-on-a-lost-node": [observe_pod(head_pod(cluster()), lost, NOW)]}[pods]
    step = deletion_step(GCS_SPEC, UID, states, job, waited)
    if isinstance(want, str):
        assert step.remove_finalizer and step.event is not None and step.event[0] == want
        assert step.event[0].event_type == ("Normal" if want == "RedisCleanedUp" else "Warning")
    else:
        assert step == want


def test_without_gcs_the_finalizer_just_goes() -> None:
    assert deletion_step(None, "", [head(cluster())], None, 0) == DeletionStep(remove_finalizer=True)


def test_finalizers_and_job_states() -> None:
    assert deletion.finalizers_with(["other"], True) == ["other", FINALIZER]
    assert deletion.finalizers_with(["other", FINALIZER], True) is None
    assert deletion.finalizers_with([FINALIZER, "other"], False) == ["other"]
    assert deletion.finalizers_with(["other"], False) is None
    assert job_state({}) == JobState()
    assert job_state({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}).succeeded
    failed = job_state({"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}})
    assert failed.failed and failed.message == "DeadlineExceeded"
    assert job_state({"status": {"conditions": [{"type": "Failed", "status": "False"}]}}) == JobState()


# -- the controller's turn against the fake API server -------------------------------------------------

KEY = (NAMESPACE, "demo")


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(turn_module, "time", FixedClock)
    monkeypatch.setattr(finalizer_module, "time", FixedClock)


def _serve(kube: FakeKube, body: dict[str, Any]) -> Controller:
    body["metadata"].setdefault("resourceVersion", "1")
    kube.swarmclusters[KEY] = copy.deepcopy(body)
    c = Controller(as_kube(kube), OperatorConfig())
    c.on_cluster("ADDED", body)
    return c


def test_a_gcs_cluster_gets_the_finalizer_before_any_pod_and_loses_it_when_gcs_goes() -> None:
    kube = FakeKube()

    async def body() -> None:
        c = _serve(kube, manifest(ft(redisAddress="redis:6379")))
        await c.reconcile(KEY)
        assert kube.swarmclusters[KEY]["metadata"]["finalizers"] == [FINALIZER]
        verbs = [v for v, _ in kube.calls]
        assert verbs.index("set_finalizers") < verbs.index("create_pod")
        await c.reconcile(KEY)
        assert [v for v, _ in kube.calls].count("set_finalizers") == 1, "only when it changes"
        plain = manifest()
        plain["metadata"].update(finalizers=[FINALIZER], resourceVersion="500")
        c.on_cluster("MODIFIED", plain)
        await c.reconcile(KEY)
        assert kube.swarmclusters[KEY]["metadata"]["finalizers"] == []

    asyncio.run(body())


def test_deleting_a_gcs_cluster_deletes_pods_runs_the_job_then_removes_the_finalizer() -> None:
    kube = FakeKube()

    async def body() -> None:
        c = _serve(kube, manifest(ft(redisAddress="redis:6379")))
        await c.reconcile(KEY)
        assert kube.pods
        stored = copy.deepcopy(kube.swarmclusters[KEY])
        stored["metadata"]["deletionTimestamp"] = iso(NOW - 5)
        c.on_cluster("MODIFIED", stored)
        assert await c.reconcile(KEY) == deletion.POLL_SECONDS
        assert {n for v, n in kube.calls if v == "delete_pod"} == {n for _, n in kube.pods}
        assert not kube.jobs, "no cleanup while the head's GCS may still write"
        for key in list(kube.pods):  # the kubelet finishes the deletions
            pod = kube.pods.pop(key)
            c.on_pod("DELETED", pod)
        await c.reconcile(KEY)
        assert list(kube.jobs) == [(NAMESPACE, "demo-redis-cleanup")]
        await c.reconcile(KEY)
        assert [v for v, _ in kube.calls].count("create_job") == 1
        assert FINALIZER in kube.swarmclusters[KEY]["metadata"]["finalizers"]
        kube.jobs[(NAMESPACE, "demo-redis-cleanup")]["status"] = {
            "conditions": [{"type": "Complete", "status": "True"}]}
        assert await c.reconcile(KEY) is None
        assert kube.swarmclusters[KEY]["metadata"]["finalizers"] == []

    asyncio.run(body())
    reasons = [reason for _, _, reason, _ in kube.events]
    assert "RedisCleanup" in reasons and "RedisCleanedUp" in reasons


def test_the_token_secret_is_made_once_and_the_autoscaler_gets_its_token() -> None:
    kube = FakeKube()
    seen: list[str | None] = []

    async def body() -> None:
        c = _serve(kube, manifest({"auth": {"mode": "token"}, "autoscaling": {"enabled": True}}))

        async def step(*args: Any, token: str | None = None, **kwargs: Any) -> None:
            seen.append(token)

        c.autoscaler.step = step  # type: ignore[method-assign]
        await c.reconcile(KEY)
        await c.reconcile(KEY)

    asyncio.run(body())
    secret = kube.secrets[(NAMESPACE, "demo-ray-token")]
    token = token_of(secret, "token")
    assert token is not None and len(token) == 64
    assert seen == [token, token]
    assert [v for v, _ in kube.calls].count("create_secret") == 1
    assert [v for v, _ in kube.calls].count("get_secret") == 1, "read once, then remembered"
    assert all(token not in message for _, _, _, message in kube.events), "the token is never told"


def test_a_token_secret_not_this_clusters_holds_back_the_pods() -> None:
    kube = FakeKube()
    kube.secrets[(NAMESPACE, "demo-ray-token")] = {
        "metadata": {"name": "demo-ray-token", "ownerReferences": [{"uid": "someone-else"}]},
        "data": {"token": base64.b64encode(b"planted").decode()}}

    async def body() -> None:
        c = _serve(kube, manifest({"auth": {"mode": "token"}}))
        assert await c.reconcile(KEY) == ray_token_module.TOKEN_RETRY_SECONDS
        await c.reconcile(KEY)

    asyncio.run(body())
    assert not kube.pods
    warnings = [message for _, etype, reason, message in kube.events if reason == "RayTokenMissing"]
    assert len(warnings) == 1 and "not this cluster's" in warnings[0]
