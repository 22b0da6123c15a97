#!/usr/bin/env python3
"""Seed a multi-arch image into a running, seeded real-pulp.sh instance.

    python3 tests/e2e/seed_multiarch.py DIR

DIR is the directory of `real-pulp.sh up` + `seed` (its pulp.env names Pulp's API, the admin
credentials and the seed registry). This pushes, by hand through the registry API, into the
seed registry's `lib/multi`:

  tag `latest`: an OCI image index of two OCI image manifests, linux/amd64 and linux/arm64/v8
  tag `v2s2`:   a Docker manifest list of two Docker schema 2 manifests, same platforms

each image with one tiny hand-made tar.gz layer (different per platform). Then Pulp gets a
remote, a repository, a mirror sync and a public distribution `org/lib/multi`. Everything is
deterministic and found by name, so running it again changes nothing. Standard library only:
the pushes are written out here rather than done with `skopeo copy --all` so that both list
formats and their exact bytes are ours.
"""

import base64
import gzip
import hashlib
import io
import json
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request

UPSTREAM = "lib/multi"
BASE_PATH = "org/lib/multi"
NAME = BASE_PATH.replace("/", "-")
PLATFORMS = [("amd64", None), ("arm64", "v8")]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def read_env(path):
    env = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                env[k] = v.strip("'")
    return env


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer(text):
    """A one-file tar.gz with fixed metadata, so that every run makes the same bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        body = text.encode() + b"\n"
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mtime, info.mode = len(body), 0, 0o644
        t.addfile(info, io.BytesIO(body))
    tar = buf.getvalue()
    return gzip.compress(tar, mtime=0), digest(tar)


def build():
    """(blobs {digest: bytes}, [(reference, media type, bytes)] in push order)."""
    blobs, manifests = {}, []
    oci_entries, docker_entries = [], []
    for arch, variant in PLATFORMS:
        gz, diff_id = layer(f"multi-arch image, linux/{arch}")
        config = {"architecture": arch, "os": "linux", "created": "2024-01-01T00:00:00Z",
                  "config": {"Labels": {"org.example.arch": arch}, "Cmd": ["/hello.txt"]},
                  "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                  "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "seed_multiarch.py"}]}
        if variant:
            config["variant"] = variant
        cfg = json.dumps(config, sort_keys=True).encode()
        blobs[digest(gz)] = gz
        blobs[digest(cfg)] = cfg
        platform = {"architecture": arch, "os": "linux"}
        if variant:
            platform["variant"] = variant
        for mt, cfg_mt, layer_mt, entries in ((OCI_MANIFEST, OCI_CONFIG, OCI_LAYER, oci_entries),
                                              (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER, docker_entries)):
            man = json.dumps({"schemaVersion": 2, "mediaType": mt,
                              "config": {"mediaType": cfg_mt, "digest": digest(cfg), "size": len(cfg)},
                              "layers": [{"mediaType": layer_mt, "digest": digest(gz), "size": len(gz)}]},
                             indent=3).encode()
            manifests.append((digest(man), mt, man))
            entries.append({"mediaType": mt, "digest": digest(man), "size": len(man), "platform": platform})
    for tag, mt, entries in (("latest", OCI_INDEX, oci_entries), ("v2s2", DOCKER_LIST, docker_entries)):
        lst = json.dumps({"schemaVersion": 2, "mediaType": mt, "manifests": entries}, indent=3).encode()
        manifests.append((tag, mt, lst))
    return blobs, manifests


def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def push(registry, blobs, manifests):
    base = f"{registry}/v2/{UPSTREAM}"
    for d, data in blobs.items():
        if http("HEAD", f"{base}/blobs/{d}")[0] == 200:
            continue
        status, headers, body = http("POST", f"{base}/blobs/uploads/")
        if status != 202:
            sys.exit(f"upload of {d} -> {status}: {body[:500]!r}")
        location = urllib.parse.urljoin(registry + "/", headers["Location"])
        sep = "&" if "?" in location else "?"
        status, _, body = http("PUT", f"{location}{sep}digest={d}", data,
                               {"Content-Type": "application/octet-stream"})
        if status != 201:
            sys.exit(f"upload of {d} -> {status}: {body[:500]!r}")
    for reference, mt, data in manifests:
        status, _, body = http("PUT", f"{base}/manifests/{reference}", data, {"Content-Type": mt})
        if status != 201:
            sys.exit(f"manifest {reference} -> {status}: {body[:500]!r}")


def pulp(api, user, password, registry):
    auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def call(method, path, body=None):
        url = path if path.startswith("http") else api + path
        data = None if body is None else json.dumps(body).encode()
        status, _, out = http(method, url, data, {"Authorization": auth, "Content-Type": "application/json"})
        if status >= 300:
            sys.exit(f"{method} {url} -> {status}: {out[:2000]!r}")
        return json.loads(out or b"{}")

    def wait(task):
        for _ in range(600):
            t = call("GET", task)
            if t["state"] == "completed":
                return t
            if t["state"] in ("failed", "canceled"):
                sys.exit(f"task {task} {t['state']}: {json.dumps(t.get('error'))}")
            time.sleep(0.3)
        sys.exit(f"task {task} did not finish")

    def find(kind):
        r = call("GET", f"/pulp/api/v3/{kind}/container/container/?name={NAME}")
        return r["results"][0] if r["count"] else None

    remote = find("remotes") or call("POST", "/pulp/api/v3/remotes/container/container/", {
        "name": NAME, "url": registry, "upstream_name": UPSTREAM, "policy": "immediate",
        "tls_validation": False})
    repo = find("repositories") or call("POST", "/pulp/api/v3/repositories/container/container/",
                                        {"name": NAME})
    wait(call("POST", repo["pulp_href"] + "sync/", {"remote": remote["pulp_href"], "mirror": True})["task"])
    if not find("distributions"):
        wait(call("POST", "/pulp/api/v3/distributions/container/container/", {
            "name": NAME, "base_path": BASE_PATH, "repository": repo["pulp_href"],
            "private": False})["task"])
    return call("GET", repo["pulp_href"])["latest_version_href"]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    env = read_env(f"{sys.argv[1]}/pulp.env")
    t0 = time.time()
    blobs, manifests = build()
    push(env["SEED_REGISTRY"], blobs, manifests)
    version = pulp(env["PULP_API"], env["PULP_ADMIN_USER"], env["PULP_ADMIN_PASSWORD"], env["SEED_REGISTRY"])
    lists = ", ".join(f"{ref} = {digest(data)}" for ref, _, data in manifests if not ref.startswith("sha256:"))
    print(f"{BASE_PATH}: synced {env['SEED_REGISTRY']}/{UPSTREAM} ({lists}) -> {version} "
          f"({time.time() - t0:.1f} s)")


if __name__ == "__main__":
    main()
