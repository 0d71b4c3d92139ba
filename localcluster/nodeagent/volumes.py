"""What a pod's containers see of its files: the volumes on the host (emptyDir, memory-backed ones as
tmpfs, hostPath, configMap, secret, projected and downwardAPI files, service-account tokens renewed before
they expire) and the mounts the launcher makes in each container.

Like a kubelet's, a memory-backed emptyDir is one tmpfs on the host, shared by the pod's containers;
every other volume is a directory under ``<pod dir>/volumes/``. Files are written through a rename, so
a container reading one (a token being renewed) sees the old or the new content, never a part.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localcluster.nodeagent.host import PodHost
from localcluster.nodeagent.podlog import PodLog
from localcluster.nodeagent.podspec import ConfigError, downward_value, quantity, token_refresh_at

REPO = Path(__file__).resolve().parents[2]
# The pod's own file systems: the launcher may create missing mount points in them (and only there).
PRIVATE_DIRS = ["/tmp", "/run", "/dev/shm"]
DEFAULT_SHM = 64 * 2**20  # what a container runtime gives a container without a /dev/shm volume
RUN_SIZE = 64 * 2**20  # the pod's own /run
DEFAULT_MODE = 0o644  # a volume's files without defaultMode or mode (a kubelet's 420)
TOKEN_RETRY = 10.0  # seconds before a failed token renewal is tried again


def _host_dirs_under_tmp() -> list[Path]:
    """The checkout and the Python environment pods run from, where they sit under /tmp."""
    dirs = {REPO, Path(sys.prefix).resolve()}
    return sorted(d for d in dirs if Path("/tmp") in d.parents and not any(p in dirs for p in d.parents))


@dataclass
class Token:
    """A projected service-account token: the file it lives in, and when to renew it."""

    volume: str
    source: dict[str, Any]  # the projected source: path, audience, expirationSeconds
    mode: int
    token: str
    refresh_at: float  # monotonic


class PodVolumes:
    """The volumes of one pod. ``pod_view`` returns the pod as the downward API must see it (with the IPs
    the agent assigned); ``on_mount`` is told of each tmpfs mounted, so that a restarted agent can undo it."""

    def __init__(self, pod_dir: Path, host: PodHost, pod_view: Callable[[], dict[str, Any]], log: PodLog,
                 on_mount: Callable[[], None]) -> None:
        self.pod_dir = pod_dir
        self.host = host
        self.pod_view = pod_view
        self.log = log
        self.on_mount = on_mount
        self.tmpfs: list[Path] = []  # memory-backed emptyDirs mounted on the host
        self._tokens: dict[tuple[str, str], Token] = {}  # (volume, path) → the token projected there

    def dir(self, name: str) -> Path:
        return self.pod_dir / "volumes" / name

    def _meta(self) -> dict[str, Any]:
        return dict(self.pod_view()["metadata"])

    def _lookup(self, kind: str, name: str) -> dict[str, str] | None:
        return self.host.pod_api.lookup(self._meta()["namespace"], kind, name)

    def mounts(self, container: dict[str, Any]) -> list[dict[str, Any]]:
        """What the launcher mounts in the container: a private /run, the pod's /tmp, a private
        /dev/shm unless a volume takes its place, then the container's volumeMounts (parents
        before children)."""
        volumes = {v["name"]: v for v in self.pod_view()["spec"].get("volumes") or []}
        pod_tmp = self.pod_dir / "tmp"
        # A fresh /run, as an image brings its own: mount points below it (the service account's
        # /var/run/secrets/kubernetes.io/serviceaccount) are made there, not on the host.
        mounts: list[dict[str, Any]] = [{"type": "tmpfs", "target": "/run", "size": RUN_SIZE, "mode": "755"}]
        # The pod's own /tmp would hide a checkout (and its venv, the stand-in for the image) that
        # lives under the host's /tmp, as a CI clone may: bind it into the pod's /tmp first, so the
        # recursive bind of that /tmp brings it along.
        for host_dir in _host_dirs_under_tmp():
            inside = pod_tmp / host_dir.relative_to("/tmp")
            inside.mkdir(parents=True, exist_ok=True)
            mounts.append({"type": "bind", "source": str(host_dir), "target": str(inside)})
        mounts.append({"type": "bind", "source": str(pod_tmp), "target": "/tmp"})
        wanted = sorted(container.get("volumeMounts") or [], key=lambda m: m["mountPath"].count("/"))
        if not any(m["mountPath"].rstrip("/") == "/dev/shm" for m in wanted):
            mounts.append({"type": "tmpfs", "target": "/dev/shm", "size": DEFAULT_SHM})
        for vm in wanted:
            vol = volumes.get(vm["name"])
            if vol is None:
                continue
            if vm.get("subPath") or vm.get("subPathExpr"):
                self.log.note_once(f"volume {vm['name']}: subPath mounts are not supported; not mounted")
                continue
            source = self.source(vol)
            if source is not None:
                mounts.append({"type": "bind", "source": str(source), "target": vm["mountPath"],
                               "readOnly": bool(vm.get("readOnly"))})
        # A volume on /tmp (the chart's, for a read-only root) hides them again: bind them back on top.
        for host_dir in _host_dirs_under_tmp():
            if any(host_dir.is_relative_to(vm["mountPath"]) for vm in wanted if vm["name"] in volumes):
                mounts.append({"type": "bind", "source": str(pod_tmp / host_dir.relative_to("/tmp")),
                               "target": str(host_dir)})
        return mounts

    def source(self, vol: dict[str, Any]) -> Path | None:
        """The host directory holding the volume, made on first use; None for kinds not supported."""
        name = vol["name"]
        target = self.dir(name)
        if "hostPath" in vol:
            return Path(vol["hostPath"]["path"])
        if "emptyDir" in vol:
            if not target.exists():
                target.mkdir(parents=True)
                target.chmod(0o1777)
                empty = vol["emptyDir"] or {}
                if empty.get("medium") == "Memory":
                    self._mount_tmpfs(target, empty.get("sizeLimit"))
            return target
        for kind, key in (("ConfigMap", "configMap"), ("Secret", "secret")):
            if key in vol:
                ref = vol[key]
                ref_name = ref.get("name") or ref.get("secretName")
                data = self._lookup(kind, ref_name)
                if data is None:
                    if ref.get("optional"):
                        data = {}
                    else:
                        raise ConfigError(f'{kind.lower()} "{ref_name}" not found (volume {name})')
                _write_projection(target, data, ref.get("items"), _mode(ref.get("defaultMode")))
                return target
        if "projected" in vol or "downwardAPI" in vol:
            _write_files(target, self._projected_files(name, vol))
            return target
        self.log.note_once(f"volume {name}: kind {sorted(k for k in vol if k != 'name')} not supported; not mounted")
        return None

    def _projected_files(self, volume: str, vol: dict[str, Any]) -> dict[str, tuple[str, int]]:
        """Path → (content, mode) of a projected or downwardAPI volume."""
        if "downwardAPI" in vol:
            sources = [{"downwardAPI": vol["downwardAPI"] or {}}]
            default_mode = _mode((vol["downwardAPI"] or {}).get("defaultMode"))
        else:
            sources = (vol["projected"] or {}).get("sources") or []
            default_mode = _mode((vol["projected"] or {}).get("defaultMode"))
        files: dict[str, tuple[str, int]] = {}
        for source in sources:
            if "serviceAccountToken" in source:
                sat = source["serviceAccountToken"]
                files[sat["path"]] = (self._token(volume, sat, default_mode), default_mode)
            elif "downwardAPI" in source:
                pod = self.pod_view()
                for item in source["downwardAPI"].get("items") or []:
                    files[item["path"]] = (downward_value(pod, item, self.host.allocatable),
                                           _mode(item.get("mode"), default_mode))
            elif "configMap" in source or "secret" in source:
                kind = "ConfigMap" if "configMap" in source else "Secret"
                ref = source["configMap"] if kind == "ConfigMap" else source["secret"]
                data = self._lookup(kind, ref["name"])
                if data is None:
                    if ref.get("optional"):
                        continue
                    raise ConfigError(f'{kind.lower()} "{ref["name"]}" not found (volume {volume})')
                items = ref.get("items") or [{"key": k, "path": k} for k in sorted(data)]
                for item in items:
                    if item["key"] not in data:
                        if ref.get("optional"):
                            continue
                        raise ConfigError(f'volume {volume}: no key {item["key"]} in {kind} {ref["name"]}')
                    files[item["path"]] = (data[item["key"]], _mode(item.get("mode"), default_mode))
            else:
                self.log.note_once(f"volume {volume}: projected source {sorted(source)} not supported; left out")
        return files

    def _token(self, volume: str, source: dict[str, Any], mode: int) -> str:
        """The token for a serviceAccountToken source: the current one, or a new one (TokenRequest,
        bound to this pod) when there is none yet or it is due for renewal."""
        key = (volume, source["path"])
        current = self._tokens.get(key)
        if current is not None and time.monotonic() < current.refresh_at:
            return current.token
        token, refresh_in = self._request_token(source)
        self._tokens[key] = Token(volume, source, mode, token, time.monotonic() + refresh_in)
        return token

    def _request_token(self, source: dict[str, Any]) -> tuple[str, float]:
        pod = self.pod_view()
        meta = pod["metadata"]
        account = pod["spec"].get("serviceAccountName") or "default"
        try:
            token, issued, expires = self.host.pod_api.request_token(
                meta["namespace"], account, meta["name"], meta["uid"], source.get("audience") or None,
                int(source.get("expirationSeconds") or 3600))
        except Exception as exc:  # the API's error, whichever client raised it
            raise ConfigError(f"service account token for {account}: {exc}") from exc
        self.log.note(f"service account {account}: token issued, "
                      f"expires {datetime.fromtimestamp(expires, UTC):%H:%M:%S}")
        return token, token_refresh_at(issued, expires) - issued

    def renew_tokens(self, now: float) -> None:
        """Replace each projected token that reached its renewal time, in place (a rename: a reader
        never sees half a file); the API server keeps accepting the old one until it expires."""
        for (volume, path), tok in list(self._tokens.items()):
            if now < tok.refresh_at:
                continue
            try:
                token, refresh_in = self._request_token(tok.source)
            except ConfigError as exc:
                self.log.note(f"volume {volume}: renewing the token failed, retrying in {TOKEN_RETRY:.0f}s: {exc}")
                tok.refresh_at = now + TOKEN_RETRY
                continue
            tok.token, tok.refresh_at = token, time.monotonic() + refresh_in
            _write_files(self.dir(volume), {path: (token, tok.mode)})

    def _mount_tmpfs(self, target: Path, size_limit: str | None) -> None:
        # One tmpfs per memory-backed emptyDir, on the host like a kubelet's, so all containers
        # of the pod share it; sized to sizeLimit (Ray checks /dev/shm's size for its object store).
        opts = "mode=1777"
        if size_limit:
            opts += f",size={int(quantity(str(size_limit)))}"
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(target)], check=True, capture_output=True)
        self.tmpfs.append(target)
        self.on_mount()

    def unmount(self) -> None:
        for mount in self.tmpfs:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)
        self.tmpfs.clear()


def _mode(value: Any, default: int = DEFAULT_MODE) -> int:
    return int(value) if value is not None else default


def _write_projection(target: Path, data: dict[str, str], items: list[dict[str, Any]] | None,
                      mode: int = DEFAULT_MODE) -> None:
    """The files of a configMap or secret volume: every key, or the listed items at their paths."""
    chosen = {i["key"]: i for i in items} if items else {k: {"path": k} for k in data}
    _write_files(target, {item.get("path") or key: (data[key], _mode(item.get("mode"), mode))
                          for key, item in chosen.items() if key in data})


def _write_files(target: Path, files: dict[str, tuple[str, int]]) -> None:
    """Write each file (path relative to ``target``) through a rename, so that a container reading
    it (a token being renewed) sees the old or the new content, never a part."""
    target.mkdir(parents=True, exist_ok=True)
    for rel, (text, mode) in files.items():
        path = target / rel
        if target.resolve() not in path.resolve().parents:
            raise ConfigError(f"volume file {rel!r} lies outside its volume")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        tmp.chmod(mode)
        os.replace(tmp, path)
