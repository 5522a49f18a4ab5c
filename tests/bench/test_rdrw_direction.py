"""bench/rdrw_direction.py: the push on each negative against the closed-form gradients of both forms, and a
tiny run end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from .conftest import bench_module


@pytest.fixture(scope="module")
def bench():
    with bench_module("rdrw_direction") as module:
        yield module


def closed_form(r_w, r_l, w, form, beta):
    """dL_PL/dr_j by hand. softmax: z = -log sum_j w_j e^{beta (r_j - r_w)}; paper: z = beta log sum_j w_j
    e^{r_w - r_j}; L = -log sigma(z), so dL/dr_j = sigma(-z) * (-dz/dr_j) and both give
    sigma(-z) * beta * (the share of negative j in the sum)."""
    terms = w * np.exp(beta * (r_l - r_w) if form == "softmax" else r_w - r_l)
    z = -np.log(terms.sum()) if form == "softmax" else beta * np.log(terms.sum())
    return 1 / (1 + np.exp(z)) * beta * terms / terms.sum()


@pytest.mark.parametrize("form", ["softmax", "paper"])
def test_push_is_the_closed_form_gradient(bench, form):
    r_w = np.array([-0.5, -1.0])
    r_l = np.array([[-0.7, -2.0, -0.4], [-3.0, -1.1, -1.5]])
    w = np.array([[1.0, 0.5, 0.75], [0.6, 1.0, 1.0]])
    for weights, beta in ((w, 1.0), (np.ones_like(w), 1.0), (w, 4.0)):
        got = bench.pushes(torch.tensor(r_w), torch.tensor(r_l), torch.tensor(weights), form, beta).numpy()
        want = np.stack([closed_form(r_w[s], r_l[s], weights[s], form, beta) for s in range(2)])
        np.testing.assert_allclose(got, want, rtol=1e-10)
    assert (got > 0).all()  # every negative is pushed down, in both forms


def test_the_two_forms_answer_lower_weights_in_opposite_directions(bench):
    # README, "Which form is the default": halving every weight softens the softmax form, sharpens eq. 7
    r_w, r_l = torch.tensor([-0.5]), torch.tensor([[-1.0, -2.5]])
    half = torch.full_like(r_l, 0.5)
    soft = bench.pushes(r_w, r_l, half, "softmax", 1.0).sum() / bench.pushes(r_w, r_l, None, "softmax", 1.0).sum()
    paper = bench.pushes(r_w, r_l, half, "paper", 1.0).sum() / bench.pushes(r_w, r_l, None, "paper", 1.0).sum()
    assert soft < 1 < paper


def test_tiny_run_end_to_end(bench, served_path, tiny_dataset, tiny_index, tmp_path):
    out = tmp_path / "d.md"
    res = bench.main(["--model", str(served_path), "--data", str(tiny_dataset.root), "--index",
                      str(tiny_index.root), "--sessions", "12", "--num-negatives", "4", "--batch-size", "5",
                      "--out", str(out)])
    assert res["sessions"] == 12 and set(res["forms"]) == {"softmax", "paper"}
    for form in res["forms"].values():
        groups = form["groups"]
        assert groups["all"]["negatives"] == 12 * 4
        assert sum(groups[f"Q{q} similarity"]["negatives"] for q in range(1, 5)) == 48
        assert sum(groups[g]["negatives"] for g in ("exposed", "random") if g in groups) == 48  # empty: left out
    assert res["weights"]["Q1 similarity"] == 1.0 and res["weights"]["Q4 similarity"] == 0.5  # eq. 6's ends
    assert json.loads(out.with_suffix(".json").read_text())["forms"] == res["forms"]
    assert "| paper (beta 1) | Q4 similarity |" in out.read_text()
