"""Every shipped example checks, plans and is already in canonical layout, so none can rot."""

from __future__ import annotations

import pathlib

import pytest

from compiler.plan import plan_program
from mixlang.check import check
from mixlang.fmt import format_module
from mixlang.loader import load

EXAMPLES = sorted((pathlib.Path(__file__).parents[1] / "examples").glob("*.mix"))


def test_there_are_examples():
    names = {p.name for p in EXAMPLES}
    assert {"customer_blend.mix", "customer_sweep.mix", "multilingual.mix"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_checks_and_plans(path):
    loaded = load(str(path))
    assert loaded.ok, loaded.diagnostics
    result = check(loaded.modules)
    assert result.program is not None and not result.diagnostics, result.diagnostics
    plans, problems = plan_program(result.program)
    assert not problems and plans
    for plan in plans:
        assert sum(t.samples for t in plan.allocation.takes) == plan.allocation.total > 0


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_formatted(path):
    loaded = load(str(path))
    text = loaded.texts[str(path)]
    assert format_module(loaded.modules[0], text) == text


def test_sweep_plans_one_point_per_share():
    result = check(load(str(EXAMPLES[0].with_name("customer_sweep.mix"))).modules)
    plans, _ = plan_program(result.program, "customer_share")
    shares = [plan.allocation.take("customer").share for plan in plans]
    assert [p.target.name for p in plans] == [
        "customer_share[customer_blend.customer=100%]", "customer_share[customer_blend.customer=75%]",
        "customer_share[customer_blend.customer=50%]"]
    assert shares[0] == 1.0 and abs(shares[1] - 0.75) < 1e-3 and abs(shares[2] - 0.5) < 1e-3
    assert plans[0].allocation.take("general").samples == 0


@pytest.mark.parametrize("name", ["customer_blend.mix", "customer_sweep.mix", "multilingual.mix"])
def test_example_compiles(tmp_path, tiny_model, name):
    import shutil

    from runner.cli import main

    examples = pathlib.Path(__file__).parents[1] / "examples"
    for spec in examples.glob("*.mix"):
        shutil.copy(spec, tmp_path / spec.name)
    shutil.copytree(examples / "data", tmp_path / "data")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny").symlink_to(tiny_model)
    assert main(["compile", str(tmp_path / name), "--jobs", "1"]) == 0
    assert (tmp_path / name.replace(".mix", ".lock.json")).exists()
    assert main(["verify", str(tmp_path / "build")]) == 0
