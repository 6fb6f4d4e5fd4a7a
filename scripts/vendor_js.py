"""Vendor the web UI's npm packages (pinned in scripts/vendor.json) into src/pictale/web/static/vendor (and
axe-core, which only the browser tests use, into tests/browser/vendor: a package's own `dest`).

    python scripts/vendor_js.py          # developers, when bumping a version (needs npm and the registry)
    python scripts/vendor_js.py --check  # CI: re-hash the committed files against vendor.lock.json, offline

`npm pack` downloads exactly one tarball per package and runs no install scripts; its sha512 must equal the
pinned `integrity`, or nothing is written. The lock file records each file's sha256 and its package's licence.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "scripts" / "vendor.json"
LOCK = "vendor.lock.json"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _dests(manifest: dict) -> dict[Path, list[dict]]:
    """Packages by the folder they go to (each folder has its own lock file)."""
    out: dict[Path, list[dict]] = {}
    for pkg in manifest["packages"]:
        out.setdefault(ROOT / pkg.get("dest", manifest["dest"]), []).append(pkg)
    return out


def vendor(manifest: dict) -> list[str]:
    done = []
    for dest, packages in _dests(manifest).items():
        _vendor(dest, packages)
        done += [pkg["spec"] for pkg in packages]
    return done


def _vendor(dest: Path, packages: list[dict]) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    lock: dict = {"packages": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for pkg in packages:
            spec, pinned = pkg["spec"], pkg["integrity"]
            out = subprocess.run(
                ["npm", "pack", spec, "--json", "--pack-destination", tmp], check=True, capture_output=True, text=True
            ).stdout
            tarball = Path(tmp) / json.loads(out)[0]["filename"]
            data = tarball.read_bytes()
            got = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
            if got != pinned:
                sys.exit(f"{spec}: integrity {got} != pinned {pinned}")
            with tarfile.open(tarball) as tar:  # members live under package/
                meta = json.loads(tar.extractfile("package/package.json").read())
                files = {}
                for src, name in pkg["files"].items():
                    content = tar.extractfile(f"package/{src}").read()
                    (dest / name).write_bytes(content)
                    files[name] = _sha256(content)
            lock["packages"][spec] = {"integrity": pinned, "license": meta.get("license"), "files": files}
    (dest / LOCK).write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")


def check(manifest: dict) -> list[str]:
    """Problems with the committed files (empty when every file matches the lock and the manifest)."""
    problems = []
    for dest, packages in _dests(manifest).items():
        problems += _check(dest, packages)
    return problems


def _check(dest: Path, packages: list[dict]) -> list[str]:
    lock = json.loads((dest / LOCK).read_text())["packages"] if (dest / LOCK).is_file() else {}
    problems = []
    for pkg in packages:
        entry = lock.get(pkg["spec"])
        if entry is None or entry["integrity"] != pkg["integrity"]:
            problems.append(f"{pkg['spec']}: not in {LOCK} with the pinned integrity; run scripts/vendor_js.py")
            continue
        for name, digest in entry["files"].items():
            path = dest / name
            if not path.is_file() or _sha256(path.read_bytes()) != digest:
                problems.append(f"{path.relative_to(ROOT)}: missing or changed since it was vendored")
    return problems


def main() -> None:
    manifest = json.loads(MANIFEST.read_text())
    if "--check" in sys.argv[1:]:
        problems = check(manifest)
        print("\n".join(problems) or "vendored files match vendor.lock.json")
        sys.exit(1 if problems else 0)
    print(f"vendored {', '.join(vendor(manifest))}")


if __name__ == "__main__":
    main()
