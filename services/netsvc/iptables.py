"""skiff's iptables rules: NAT for the bridge and DNAT for published ports, in its own chains.

::

    nat     PREROUTING  -m addrtype --dst-type LOCAL -j SKIFF
            OUTPUT      -m addrtype --dst-type LOCAL -j SKIFF
            POSTROUTING -j SKIFF-POSTROUTING
    nat     SKIFF              one DNAT per published port (from anywhere, the
                               bridge included: containers reach published ports
                               through a host address, as through Docker's proxy)
    nat     SKIFF-POSTROUTING  MASQUERADE the subnet leaving by another interface,
                               127.0.0.0/8 sources entering skiff0 (published
                               ports reached on 127.0.0.1: route_localnet, as
                               Docker's userland-proxy=false), and DNATed traffic
                               from the subnet back into it (hairpin)
    filter  FORWARD     -j SKIFF-FORWARD (first)
    filter  SKIFF-FORWARD      -j SKIFF-ISOLATION-1 (first), then ACCEPT in or out of skiff0
    filter  SKIFF-ISOLATION-1  per bridge B of the engine: -i B ! -o B -j SKIFF-ISOLATION-2
    filter  SKIFF-ISOLATION-2  per bridge B of the engine: -o B -j DROP

The two isolation chains are Docker's DOCKER-ISOLATION-STAGE-1/2: a packet that
leaves one of the engine's bridges for another of them is dropped, so containers
on different networks (the default bridge included) cannot reach each other.
They are shared by every bridge of one engine (:class:`Isolation`), jumped to
from each bridge's own FORWARD chain (so no order of the jumps in FORWARD can
let a packet pass before them), rewritten whole with every bridge's rules and
removed with the last bridge.

Every change rewrites skiff's chains whole from the endpoint records with one
``iptables-restore --noflush`` (a chain declared in the input is flushed, in one
transaction): one fork+exec per change, and a rule no record owns cannot
survive a change or a start-up. The jumps from the built-in chains are added
once, when missing, and removed by :meth:`Rules.teardown`.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterable

from skiff.common.errors import Internal
from skiff.netsvc.model import Endpoint

log = logging.getLogger(__name__)

TIMEOUT = 30


def _run(argv: list[str], text: str | None = None) -> str:
    try:
        out = subprocess.run(argv, input=text, capture_output=True, text=True, timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise Internal(f"{argv[0]}: {err}") from err
    if out.returncode != 0:
        raise Internal(f"{' '.join(argv)} failed: {out.stderr.strip()}\n{text or ''}")
    return out.stdout


class Isolation:
    """The bridges of one engine, isolated from each other (the engine's ``<prefix>-ISOLATION-1/2`` chains)."""

    def __init__(self, prefix: str = "SKIFF"):
        self.stage1 = f"{prefix}-ISOLATION-1"
        self.stage2 = f"{prefix}-ISOLATION-2"
        #: Bridges whose rules are installed (added by Rules.sync, removed by Rules.teardown).
        self.bridges: set[str] = set()

    def render(self, bridges: Iterable[str]) -> list[str]:
        """filter-table restore lines that rewrite both chains for ``bridges``."""
        names = sorted(bridges)
        return [f":{self.stage1} - [0:0]", f":{self.stage2} - [0:0]",
                *(f"-A {self.stage1} -i {b} ! -o {b} -j {self.stage2}" for b in names),
                *(f"-A {self.stage2} -o {b} -j DROP" for b in names)]


class Rules:
    def __init__(self, bridge: str, prefix: str = "SKIFF", isolation: Isolation | None = None):
        self.bridge = bridge
        self.dnat = prefix
        self.post = f"{prefix}-POSTROUTING"
        self.fwd = f"{prefix}-FORWARD"
        self.isolation = isolation
        self._jumps_ok = False

    def _jumps(self) -> dict[str, list[str]]:
        return {
            "nat": [f"PREROUTING -m addrtype --dst-type LOCAL -j {self.dnat}",
                    f"OUTPUT -m addrtype --dst-type LOCAL -j {self.dnat}",
                    f"POSTROUTING -j {self.post}"],
            "filter": [f"FORWARD -j {self.fwd}"],
        }

    def _present_jumps(self) -> list[tuple[str, str]]:
        """(table, rule as iptables-save prints it) of every jump into skiff's chains."""
        found = []
        table = ""
        ours = {self.dnat, self.post, self.fwd}
        for line in _run(["iptables-save"]).splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith("-A ") and line.split()[1] in ("PREROUTING", "OUTPUT", "POSTROUTING", "FORWARD"):
                words = line.split()
                if "-j" in words and words[words.index("-j") + 1] in ours:
                    found.append((table, line[3:]))
        return found

    def render(self, subnet: str, endpoints: Iterable[Endpoint], nat_only: bool = False) -> str:
        """The restore input for ``subnet`` and the published ports of ``endpoints``.

        ``nat_only``: just the nat table (a change of published ports: the filter table's
        chains do not depend on them, and one table less is ~6 ms less of iptables-restore).
        """
        br = self.bridge
        nat = [
            "*nat",
            f":{self.dnat} - [0:0]",
            f":{self.post} - [0:0]",
        ]
        for e in endpoints:
            for p in e.ports:
                dst = f"-d {p.host_ip}/32 " if p.host_ip and p.host_ip != "0.0.0.0" else ""
                nat.append(f"-A {self.dnat} {dst}-p {p.protocol} -m {p.protocol} --dport {p.host_port} "
                           f"-j DNAT --to-destination {e.ip_address}:{p.container_port}")
        nat += [
            f"-A {self.post} -s {subnet} ! -o {br} -j MASQUERADE",
            f"-A {self.post} -s 127.0.0.0/8 -o {br} -j MASQUERADE",
            # Hairpin: a container reaching a published port through a host address comes back
            # to its own bridge; the reply must come back through the host too.
            f"-A {self.post} -s {subnet} -o {br} -m conntrack --ctstate DNAT -j MASQUERADE",
        ]
        filt = ["*filter"]
        if self.isolation is not None:
            filt += self.isolation.render(self.isolation.bridges | {br})
        filt += [f":{self.fwd} - [0:0]"]
        if self.isolation is not None:
            filt.append(f"-A {self.fwd} -j {self.isolation.stage1}")
        filt += [f"-A {self.fwd} -o {br} -j ACCEPT", f"-A {self.fwd} -i {br} -j ACCEPT"]
        if not self._jumps_ok:
            present = {(t, r.split()[0]) for t, r in self._present_jumps()}
            for table, rules in self._jumps().items():
                for rule in rules:
                    if (table, rule.split()[0]) not in present:
                        add = f"-I {rule.split(' ', 1)[0]} 1 {rule.split(' ', 1)[1]}" if table == "filter" \
                            else f"-A {rule}"
                        (filt if table == "filter" else nat).append(add)
        if nat_only and self._jumps_ok:
            return "\n".join([*nat, "COMMIT"]) + "\n"
        return "\n".join([*nat, "COMMIT", *filt, "COMMIT"]) + "\n"

    def sync(self, subnet: str, endpoints: Iterable[Endpoint], nat_only: bool = False) -> None:
        """Make skiff's chains exactly the rules for ``endpoints``, in one transaction."""
        _run(["iptables-restore", "-w", "--noflush"], self.render(subnet, endpoints, nat_only))
        self._jumps_ok = True
        if self.isolation is not None:
            self.isolation.bridges.add(self.bridge)

    def teardown(self) -> None:
        """Remove the jumps and skiff's chains. Idempotent."""
        lines: dict[str, list[str]] = {"nat": [], "filter": []}
        for table, rule in self._present_jumps():
            lines.setdefault(table, []).append(f"-D {rule}")
        existing = _run(["iptables-save"])
        for table, chains in (("nat", (self.dnat, self.post)), ("filter", (self.fwd,))):
            for chain in chains:
                if f":{chain} " in existing:
                    lines[table] += [f"-F {chain}", f"-X {chain}"]
        iso = self.isolation
        if iso is not None:
            iso.bridges.discard(self.bridge)
            if f":{iso.stage1} " in existing:
                # Still jumped to from a chain other than ours (a bridge not yet restored after a
                # restart)? Then only rewrite it; the last bridge's teardown removes it.
                others = [ln for ln in existing.splitlines() if ln.startswith("-A ")
                          and ln.split()[1] != self.fwd and ln.endswith(f"-j {iso.stage1}")]
                if iso.bridges or others:
                    lines["filter"] += iso.render(iso.bridges)
                else:
                    lines["filter"] += [f"-F {iso.stage1}", f"-F {iso.stage2}", f"-X {iso.stage1}",
                                        f"-X {iso.stage2}"]
        text = "".join(f"*{t}\n" + "".join(f"{x}\n" for x in ls) + "COMMIT\n" for t, ls in lines.items() if ls)
        if text:
            _run(["iptables-restore", "-w", "--noflush"], text)
        self._jumps_ok = False
