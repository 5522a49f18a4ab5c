"""The rows of a quality experiment: the paper's methods, RAD-DPO's two forms and their ablations, by name."""

from __future__ import annotations

import re
from typing import Any

from trainer.evaluate import POPULAR_SIDS

# RAD-DPO's list-wise term in its two forms (trainer/losses.py), each row named by its form:
# the softmax-DPO form (ours; the default of `radgr train rad-dpo`) and the paper's eq. 7
RAD_DPO = "rad-dpo-softmax"  # the default form's row, the reference of the comparisons
RAD_FORMS = {RAD_DPO: "softmax", "rad-dpo-paper": "paper"}
# not in the paper: RDRW weights from the index's SID vectors instead of EOS states (bench/rdrw_signal.py)
SID_SIGNAL = f"{RAD_DPO}, RDRW on SID vectors"
ABLATIONS = {"w/o TLGD": {"tlgd": False}, "w/o RDRW": {"rdrw": False},
             "w/o multi-label SFT": {"multi_label_sft": False}}
# name -> preference options, the method's among them (trainer.config.pref_config; None: the SFT checkpoint)
VARIANTS: dict[str, dict[str, Any] | None] = {
    "sft": None,
    "dpo": {"method": "dpo"},
    "simpo": {"method": "simpo"},
    "orpo": {"method": "orpo"},
    **{f"{name} {ablation}".strip(): {"method": "rad-dpo", "form": form, **switches}
       for name, form in RAD_FORMS.items() for ablation, switches in {"": {}, **ABLATIONS}.items()},
    SID_SIGNAL: {"method": "rad-dpo", "rdrw_signal": "sid"},
}
# the rows of the paper's Table 1: what an experiment runs unless --variant says otherwise
PAPER_VARIANTS = [v for v in VARIANTS if v != SID_SIGNAL]
POPULAR = POPULAR_SIDS  # the baseline row: one ranking for every request (evaluate_popular)


def slug(variant: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", variant.lower()).strip("-")
