"""Name the dealer in SEMI2K results measured before the `dealer` option existed (issue 12).

Until then no beaver_type was set, so SPU 0.9.5 used its default, TrustedFirstParty (party 0
derives every Beaver triple; insecure against party 0). This adds "dealer":
"trusted_first_party" to every SEMI2K record of the given JSON files (forward.json: in
"setting"), and rewrites the SEMI2K cells of their markdown tables as "semi2k (TFP)". No
figure changes. Idempotent.

    python experiments/relabel_dealer.py 'dirs=[results/batching,
        results/forward/roberta-base-1layer-seq128,results/iteration/roberta-large_semi2k,
        results/iteration]'
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re

import common

DEALER = "trusted_first_party"
NOTE = ("semi2k (TFP): SEMI2K with SPU's TrustedFirstParty dealer, the default beaver_type when "
        "this was measured (party 0 derives every Beaver triple, so nothing is hidden from "
        "party 0); labelled by experiments/relabel_dealer.py, figures unchanged.")


def label_record(r: dict) -> bool:
    if r.get("protocol") != "semi2k":
        return False
    target = r["setting"] if isinstance(r.get("setting"), dict) and "protocol" in r["setting"] \
        else r
    if target.get("dealer") == DEALER:
        return False
    target["dealer"] = DEALER
    return True


def relabel_json(path: str) -> int:
    with open(path) as f:
        data = json.load(f)
    records = data["records"] if isinstance(data, dict) and "records" in data else data
    if not isinstance(records, list):
        return 0
    n = sum(label_record(r) for r in records if isinstance(r, dict))
    if n:
        common.write_json(path, data)
    return n


def relabel_markdown(path: str) -> int:
    with open(path) as f:
        text = f.read()
    new, n = re.subn(r"\| semi2k \|", "| semi2k (TFP) |", text)
    if n and NOTE not in new:
        new = new.rstrip("\n") + "\n\n" + NOTE + "\n"
    if new != text:
        with open(path, "w") as f:
            f.write(new)
    return n


@dataclasses.dataclass
class Config(common.AppConfig):
    dirs: list[str] = dataclasses.field(default_factory=list)  # folders of *.json and *.md


@common.hydra_app(Config, "relabel_dealer")
def main(cfg) -> None:
    if not cfg.dirs:
        raise SystemExit("no folders given: dirs=[DIR,...]")
    for d in cfg.dirs:
        for path in sorted(glob.glob(os.path.join(d, "*.json"))):
            print(f"{path}: {relabel_json(path)} records labelled")
        for path in sorted(glob.glob(os.path.join(d, "*.md"))):
            print(f"{path}: {relabel_markdown(path)} table cells labelled")


if __name__ == "__main__":
    main()
