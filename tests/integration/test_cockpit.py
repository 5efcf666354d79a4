"""The lead's cockpit against the lab: the dry run writes nothing and the run makes exactly its plan;
preflight refuses a stopped file server and a full application; rollback shows its undo list and asks."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ikomm.connectors import Connectors
from ikomm.inventory import Inventory, load_inventory
from ikomm.ledger import Ledger
from ikomm.snapshot import OPERATIONAL
from lab.manager import Lab
from tests.integration.conftest import Env

pytestmark = pytest.mark.integration


def ikomm(env: Env, *args: str, inventory: Path) -> subprocess.CompletedProcess[str]:
    """`ikomm ARGS` as a lead runs it, without a terminal; output captured."""
    return env.said(*args, "--inventory", str(inventory), timeout=900)


def world(inv: Inventory, lab: Lab) -> dict[str, Any]:
    """Everything a wave could write, read from every server: directory entries (but what servers change on
    their own), every file, folder and link below the SFTP servers' roots, the broker's collections."""
    made = Connectors(inv)
    try:
        seen: dict[str, Any] = {}
        directories = [inv.platform.directory] + [m.legacy.directory for m in inv.municipalities.values()]
        for d in directories:
            seen[f"ldap {d.host}"] = {
                e.dn: {k: v for k, v in e.attributes.items() if k not in OPERATIONAL}
                for e in made.directory(d).search(d.base_dn, "(objectClass=*)", ["*"])
            }
        roots = [m.legacy.file_server.name for m in inv.municipalities.values()]
        roots += [z.file_server.name for z in inv.platform.zones] + ["config-host"]
        for name in roots:
            root = lab.server_path(name, "/")
            seen[f"files {name}"] = {
                str(p.relative_to(root)): (p.is_symlink(), p.lstat().st_size, p.lstat().st_mtime_ns, p.lstat().st_mode)
                for p in sorted(root.rglob("*"))
            }
        for zone in inv.platform.zones:
            collection = zone.terminal_farm.collection
            seen[f"broker {collection}"] = sorted(made.broker().collection_users(collection))
        return seen
    finally:
        made.close()


def test_plan_writes_nothing_and_the_run_makes_exactly_the_plan(env: Env, lab: Lab, lab_inventory: Inventory) -> None:
    """The dry run over all three municipalities changes no server and creates no state; it predicts the held
    users; the wave run afterwards records, per user, exactly the changes the plan listed. Then the rollback
    shows its undo list, asks (refusing without a terminal), and undoes with --yes."""
    inv = lab_inventory
    wave = env.wave_file("plan", ["lillehammer", "gausdal", "oyer"], approval_required=False)
    before = world(inv, lab)
    planned = ikomm(env, "wave", "plan", str(wave), "--json", inventory=inv.root)
    assert planned.returncode == 0, planned.stderr[-3000:]
    assert world(inv, lab) == before  # not one entry, file or broker entry changed
    assert not Path(env.vars["IKOMM_STATE"]).exists()  # no state folder, no credential file
    assert not Path(env.ledger_url.removeprefix("sqlite:///")).exists()  # no ledger created
    plan = json.loads(planned.stdout)
    forecast = {u["user"]: u for u in plan["users"]}
    assert {u["outcome"] for u in plan["users"]} <= {"moves", "held", "left_out"}
    held = {k for k, u in forecast.items() if u["outcome"] == "held"}
    assert held and all("not ready" in forecast[k]["reason"] for k in held)
    moves = {k for k, u in forecast.items() if u["outcome"] == "moves"}
    assert all(forecast[k]["bytes"] > 0 and forecast[k]["changes"] for k in moves)
    assert sum(t["accounts"] for t in plan["totals"].values()) == len(moves)

    ran = ikomm(env, "wave", "run", str(wave), inventory=inv.root)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    ledger = Ledger(env.ledger_url)
    rows = {r.key: r for r in ledger.users("plan")}
    assert {k for k, r in rows.items() if r.state == "verified"} == moves
    assert {k for k, r in rows.items() if r.state == "held"} == held
    for key in moves:
        wanted = sorted((c["stage"], c["kind"], c["target"]) for c in forecast[key]["changes"])
        made = sorted((c.stage, c.kind, c.target) for c in ledger.changes(key, statuses=("done",)))
        assert made == wanted, key

    # the rollback: asks first, and without a terminal refuses, changing nothing
    done = sum(len(ledger.changes(k, statuses=("done",))) for k in rows)
    refused = ikomm(env, "rollback", "wave", "plan", inventory=inv.root)
    assert refused.returncode == 2 and "--yes" in refused.stderr, refused.stdout + refused.stderr
    assert sum(len(ledger.changes(k, statuses=("done",))) for k in rows) == done
    dry = ikomm(env, "rollback", "wave", "plan", "--dry-run", "--json", inventory=inv.root)
    assert dry.returncode == 0, dry.stderr
    undo = {u["user"]: u["undo"] for u in json.loads(dry.stdout)}
    assert sum(len(u) for u in undo.values()) == done and all(undo[k] for k in moves)
    assert all(u["what"] and not u["drift"] for k in moves for u in undo[k])
    assert sum(len(ledger.changes(k, statuses=("done",))) for k in rows) == done  # the dry run changed nothing
    assert ikomm(env, "rollback", "wave", "plan", "--yes", inventory=inv.root).returncode == 0
    proof = ikomm(env, "verify", "rollback", "plan", inventory=inv.root)
    assert proof.returncode == 0 and " 0 difference(s)" in proof.stdout, proof.stdout[-2000:]

    listed = ikomm(env, "wave", "list", "--waves", str(env.dir), "--json", inventory=inv.root)
    assert listed.returncode == 0, listed.stderr
    assert {r["wave"]: r["state"] for r in json.loads(listed.stdout)}["plan"] == "done"


def test_preflight_refuses_a_stopped_file_server_and_a_full_application(
    env: Env, lab: Lab, lab_inventory: Inventory, tmp_path: Path
) -> None:
    """All clear on the lab; a stopped legacy file server and an application without seats are each named,
    and `wave run` refuses before writing anything."""
    inv = lab_inventory
    wave = env.wave_file("fly", ["gausdal", "oyer"])
    clear = ikomm(env, "preflight", str(wave), "--json", inventory=inv.root)
    assert clear.returncode == 0, clear.stdout[-3000:]
    checks = {c["name"]: c for c in json.loads(clear.stdout)["checks"]}
    expected = {"window", "platform-ad", "legacy-dir-gausdal", "legacy-dir-oyer", "fs-gausdal", "fs-oyer"}
    assert expected | {"config-host", "broker", "prefect", "limits", "names", "seats"} <= set(checks)
    assert any(name.startswith("space on ") for name in checks)

    lab.stop_server("fs-gausdal")
    try:
        stopped = ikomm(env, "preflight", str(wave), "--json", inventory=inv.root)
        refused = ikomm(env, "wave", "run", str(wave), "--auto-approve", inventory=inv.root)
    finally:
        lab.start_server("fs-gausdal")
    assert stopped.returncode == 1
    failed = {c["name"]: c["detail"] for c in json.loads(stopped.stdout)["checks"] if not c["ok"]}
    assert "fs-gausdal" in failed and "TransientError" in failed["fs-gausdal"], failed
    assert refused.returncode == 1 and "preflight found" in refused.stderr, refused.stderr[-2000:]
    assert not Path(env.ledger_url.removeprefix("sqlite:///")).exists()  # nothing written, not even a ledger

    inv_dir = tmp_path / "inventory"
    shutil.copytree(inv.root, inv_dir)
    apps = yaml.safe_load((inv_dir / "applications.yaml").read_text(encoding="utf-8"))

    def needs(app: dict[str, Any]) -> int:
        """Enabled Gausdal and Øyer users whose legacy groups grant the application (and who get a group)."""
        return sum(
            1
            for m in ("gausdal", "oyer")
            if m in app["groups"]
            for u in inv.users[m]
            if u.enabled and set(app.get("granted_by", {}).get(m, [])) & set(u.legacy_groups)
        )

    full = next(a for a in apps["applications"] if needs(a) >= 2)
    full["seat_limit"] = 1
    (inv_dir / "applications.yaml").write_text(yaml.safe_dump(apps, allow_unicode=True), encoding="utf-8")
    no_seats = ikomm(env, "preflight", str(wave), "--json", inventory=inv_dir)
    assert no_seats.returncode == 1
    failed = {c["name"]: c["detail"] for c in json.loads(no_seats.stdout)["checks"] if not c["ok"]}
    assert set(failed) == {"seats"} and load_inventory(inv_dir).applications[full["id"]].name in failed["seats"]
