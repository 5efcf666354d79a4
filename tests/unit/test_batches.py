"""Waves on workers without servers: batches, the shared failure budget and seats, the per-user claims."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ikomm.batches import batch_name, batches
from ikomm.budget import Budget, SharedBudget
from ikomm.chunks import chunks
from ikomm.inventory import Inventory, load_inventory
from ikomm.leases import Claim, this_process
from ikomm.ledger import Ledger
from ikomm.waves import load_wave
from lab.synthetic import generate


@pytest.fixture(scope="module")
def inv(tmp_path_factory: pytest.TempPathFactory) -> Inventory:
    folder = tmp_path_factory.mktemp("batches") / "inventory"
    generate(folder, users=300, seed=5, lab_dir="../lab")
    return load_inventory(folder)


def test_batches_keep_municipalities_apart_and_departments_together(inv: Inventory, tmp_path: Path) -> None:
    """Every user once; at most size a batch; one municipality a batch; a department split only when it must be."""
    path = tmp_path / "w.yaml"
    spec = {"id": "w", "name": "t", "municipalities": ["lillehammer", "gausdal", "oyer"], "users": {"all": True}}
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    wave = load_wave(path, inv)
    keys = [wu.key for wu in wave.users]
    by_key = {wu.key: wu for wu in wave.users}
    for size in (7, 25, 200):
        made = batches(wave, keys, size)
        flat = [k for b in made for k in b]
        assert sorted(flat) == sorted(keys) and len(flat) == len(set(flat))
        assert all(0 < len(b) <= size for b in made)
        assert all(len({by_key[k].muni for k in b}) == 1 for b in made)
        split = {}
        for i, b in enumerate(made):
            for k in b:
                split.setdefault((by_key[k].muni, by_key[k].user.department), set()).add(i)
        for (muni, dept), where in split.items():
            members = sum(1 for wu in wave.users if (wu.muni, wu.user.department) == (muni, dept))
            assert len(where) <= -(-members // size) + 1, (muni, dept, size, where)
    few = batches(wave, keys[:3], 200)  # three users of one municipality: one batch
    assert len(few) == 1 and sorted(few[0]) == sorted(keys[:3])
    first = batches(wave, keys, 25)[0]
    assert batch_name(wave, first, "prepare").startswith("w · prepare · ") and f"({len(first)} users)" in batch_name(
        wave, first, "prepare"
    )


def _start_many(url: str, wave: str, n: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    budget = SharedBudget(0.5, 2, Ledger(url), wave)
    out.put(sum(1 for _ in range(n) if budget.start()))


def test_the_shared_budget_counts_across_processes_as_one_budget(tmp_path: Path) -> None:
    """Two processes count into one budget: 2 x 20 started; failures from either trip it for both, as a Budget
    with the same counts would be."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    Ledger(url)
    out: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    procs = [multiprocessing.Process(target=_start_many, args=(url, "w", 20, out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert out.get() + out.get() == 40
    shared, local = SharedBudget(0.5, 2, Ledger(url), "w"), Budget(0.5, 2, started=40)
    assert shared.started == 40 and not shared.tripped
    for _ in range(21):
        shared.fail()
        local.fail()
        assert shared.tripped == local.tripped
    assert shared.tripped and not shared.start() and SharedBudget(0.5, 2, Ledger(url), "w").tripped
    Ledger(url).forget_tallies("w")
    assert not shared.tripped and shared.started == 0


def test_a_seat_tally_never_goes_past_its_limit(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    assert ledger.tally("w", "seats:app", lambda: 8) == 8
    assert ledger.tally("w", "seats:app", lambda: 0) == 8  # counted once: the first count stays
    assert ledger.add_tally("w", "seats:app", below=10) and ledger.add_tally("w", "seats:app", below=10)
    assert not ledger.add_tally("w", "seats:app", below=10) and ledger.tally("w", "seats:app") == 10
    assert ledger.add_tally("w", "seats:app", by=-1) and ledger.tally("w", "seats:app") == 9


def test_a_claim_leaves_users_a_live_process_holds_and_takes_those_of_a_dead_one(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url)
    # a live process (this test's sleeping child) holds user:a; a dead one held user:b
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = this_process().rsplit(":", 2)[0]
        with open(f"/proc/{child.pid}/stat", encoding="ascii") as fh:
            started = fh.read().rsplit(")", 1)[1].split()[19]
        ledger.acquire_lease("user:a", f"{host}:{child.pid}:{started}", lambda h, r: True, str)
        ledger.acquire_lease("user:b", f"{host}:{2**22 + os.getpid()}:1", lambda h, r: True, str)
        with Claim(ledger, ["batch:1", "user:a", "user:b", "user:c"]) as claim:
            assert claim.taken == ["batch:1", "user:b", "user:c"] and list(claim.refused) == ["user:a"]
            assert "is being run by process" in claim.refused["user:a"]
            held = {name: holder for name, holder, _ in ledger.leases()}
            assert held["user:b"] == this_process()
        assert {name for name, _, _ in ledger.leases()} == {"user:a"}  # given back, the other's kept
    finally:
        child.kill()


def test_chunks_keep_every_item_once_in_order_and_refuse_a_size_below_one() -> None:
    assert [list(c) for c in chunks([1, 2, 3, 4, 5], 2)] == [[1, 2], [3, 4], [5]]
    assert list(chunks([], 3)) == []
    assert [list(c) for c in chunks("abc", 3)] == [["a", "b", "c"]]
    with pytest.raises(ValueError, match="at least 1"):
        list(chunks([1], 0))
