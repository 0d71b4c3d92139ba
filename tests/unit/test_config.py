"""config.from_args: flags, environment, and which wins."""

from __future__ import annotations

from typing import Any

import pytest

from swarm_operator.config import OperatorConfig, cluster_domain_from_resolv_conf, from_args

POD_RESOLV_CONF = """search team-a.svc.k8s.corp svc.k8s.corp k8s.corp
nameserver 10.96.0.10
options ndots:5
"""


@pytest.mark.parametrize(("text", "domain"), [
    pytest.param(POD_RESOLV_CONF, "k8s.corp", id="pod"),
    pytest.param("search svc.cluster.local\n", "cluster.local", id="svc-first"),
    pytest.param("nameserver 1.1.1.1\nsearch ns.svc.cluster.local.\n", "cluster.local", id="trailing-dot"),
    pytest.param("search corp.example mysvc.example.com\n", None, id="a-laptop"),
    pytest.param("search a.b.svc.x\n", None, id="svc-too-deep"),
    pytest.param("# search ns.svc.cluster.local\n", None, id="comment"),
    pytest.param("", None, id="empty"),
])
def test_cluster_domain_from_resolv_conf(text: str, domain: str | None) -> None:
    assert cluster_domain_from_resolv_conf(text) == domain


@pytest.mark.parametrize(("argv", "env", "domain"), [
    pytest.param([], {}, "k8s.corp", id="detected"),
    pytest.param([], {"CLUSTER_DOMAIN": "env.example"}, "env.example", id="env-beats-detected"),
    pytest.param(["--cluster-domain", "flag.example"], {}, "flag.example", id="flag-beats-detected"),
])
def test_cluster_domain_precedence(argv: list[str], env: dict[str, str], domain: str) -> None:
    assert from_args(["run", *argv], env, resolv_conf=POD_RESOLV_CONF).cluster_domain == domain


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        pytest.param([], {}, {}, id="defaults"),
        pytest.param(["--namespace", "a"], {}, {"namespaces": ("a",)}, id="one-namespace"),
        pytest.param(["-n", "a", "--namespace", "b"], {}, {"namespaces": ("a", "b")}, id="repeatable"),
        pytest.param(["--all-namespaces"], {}, {"namespaces": ()}, id="all-namespaces"),
        pytest.param([], {"SWARM_NAMESPACES": "x,y"}, {"namespaces": ("x", "y")}, id="env-namespaces"),
        pytest.param([], {"SWARM_NAMESPACES": "x, y ,,"}, {"namespaces": ("x", "y")}, id="env-namespaces-spaces"),
        pytest.param([], {"SWARM_NAMESPACES": ""}, {"namespaces": ()}, id="env-namespaces-empty"),
        pytest.param(["-n", "a"], {"SWARM_NAMESPACES": "x"}, {"namespaces": ("a",)}, id="flag-beats-env"),
        pytest.param(["-A"], {"SWARM_NAMESPACES": "x"}, {"namespaces": ()}, id="all-namespaces-beats-env"),
        pytest.param(["--metrics-port", "9000", "--health-port", "9001"], {},
                     {"metrics_port": 9000, "health_port": 9001}, id="ports"),
        pytest.param([], {"SWARM_METRICS_PORT": "7000", "SWARM_HEALTH_PORT": "7001"},
                     {"metrics_port": 7000, "health_port": 7001}, id="env-ports"),
        pytest.param(["--metrics-port", "9000"], {"SWARM_METRICS_PORT": "7000", "SWARM_HEALTH_PORT": "7001"},
                     {"metrics_port": 9000, "health_port": 7001}, id="flag-port-beats-env"),
        pytest.param(["--metrics-port", "0"], {"SWARM_METRICS_PORT": "7000"}, {"metrics_port": 0},
                     id="explicit-zero-port-is-a-flag"),
        pytest.param(["--leader-elect"], {}, {"leader_elect": True}, id="leader-elect"),
        pytest.param(["--standalone"], {}, {"leader_elect": False}, id="standalone"),
        pytest.param(["--leader-elect"], {"POD_NAMESPACE": "ops"}, {"leader_elect": True, "lease_namespace": "ops"},
                     id="lease-in-own-namespace"),
        pytest.param(["--lease-namespace", "kube-system", "--lease-name", "l"], {"POD_NAMESPACE": "ops"},
                     {"lease_namespace": "kube-system", "lease_name": "l"}, id="lease-flags-beat-env"),
        pytest.param(["--workers", "3", "--resync-seconds", "2.5", "--log-level", "DEBUG"], {},
                     {"workers": 3, "resync_seconds": 2.5, "log_level": "DEBUG"}, id="tuning"),
        pytest.param(["--kubeconfig", "/k", "--context", "second"], {}, {"kubeconfig": "/k", "context": "second"},
                     id="kubeconfig-and-context"),
        pytest.param([], {"CLUSTER_DOMAIN": "corp.example"}, {"cluster_domain": "corp.example"}, id="env-domain"),
        pytest.param(["--cluster-domain", "a.b."], {"CLUSTER_DOMAIN": "corp.example"}, {"cluster_domain": "a.b"},
                     id="flag-domain-beats-env"),
    ],
)
def test_from_args(argv: list[str], env: dict[str, str], expected: dict[str, Any]) -> None:
    cfg = from_args(["run", *argv], env)
    defaults = OperatorConfig()
    for field, default in vars(defaults).items():
        assert getattr(cfg, field) == expected.get(field, default), field


@pytest.mark.parametrize(
    ("namespaces", "expected"),
    [pytest.param((), True, id="none-means-all"), pytest.param(("a",), False, id="some")],
)
def test_all_namespaces(namespaces: tuple[str, ...], expected: bool) -> None:
    assert OperatorConfig(namespaces=namespaces).all_namespaces is expected


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([], id="no-command"),
        pytest.param(["run", "-n", "a", "--all-namespaces"], id="namespace-and-all"),
        pytest.param(["run", "--leader-elect", "--standalone"], id="leader-and-standalone"),
        pytest.param(["run", "--workers", "0"], id="zero-workers"),
        pytest.param(["run", "--metrics-port", "http"], id="non-numeric-port"),
        pytest.param(["run", "--log-level", "TRACE"], id="unknown-log-level"),
        pytest.param(["run", "--bogus"], id="unknown-flag"),
    ],
)
def test_bad_arguments_exit(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        from_args(argv, {})
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_environment_defaults_to_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_NAMESPACES", "from-env")
    assert from_args(["run"]).namespaces == ("from-env",)


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        OperatorConfig().workers = 2  # type: ignore[misc]
