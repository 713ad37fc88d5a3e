"""`mixc` end to end: exit statuses, output streams, and what each verb prints."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from runner.cli import main

EXAMPLES = pathlib.Path(__file__).parents[2] / "examples"

GOOD = """\
source a {
  path "a.jsonl"
  format text(field = "text")
}

mix m {
  tokenizer "tok"
  seq_len 128
  total 10 samples
  take a 100%
}
"""


def _spec(tmp_path: pathlib.Path, text: str, records: int = 5) -> pathlib.Path:
    (tmp_path / "a.jsonl").write_text("".join(f'{{"text": "r{i}"}}\n' for i in range(records)))
    path = tmp_path / "m.mix"
    path.write_text(text)
    return path


def test_check_clean_file_exits_0(tmp_path, capsys):
    assert main(["check", str(_spec(tmp_path, GOOD))]) == 0
    assert "ok: 1 file checked" in capsys.readouterr().out


def test_check_errors_exit_1_with_location_and_caret(tmp_path, capsys):
    path = _spec(tmp_path, GOOD.replace("take a 100%", "take ab 100%"))
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith(f"{path}:10:8: error[E107]: unknown source `ab`")
    assert "   |        ^^" in out and "help: did you mean `a`?" in out


def test_check_concise_is_one_line_per_diagnostic(tmp_path, capsys):
    path = _spec(tmp_path, GOOD.replace("seq_len 128", 'seq_len "128"').replace("take a 100%", "take a 90%"))
    assert main(["check", "--format", "concise", str(path)]) == 1
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith(str(path))]
    assert [l.split(": ")[1] for l in lines] == ["error[E306]", "error[E201]"]  # in file order


def test_warnings_alone_exit_0(tmp_path):
    assert main(["check", str(_spec(tmp_path, GOOD.replace("seq_len 128", "seq_len 128\n  temperature 2")))]) == 0


def test_missing_file_and_bad_flags_are_usage_errors(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope.mix")]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["check", "--format", "fancy", "x.mix"])
    assert e.value.code == 2


def test_fmt_check_lists_files_and_rewrite_is_canonical(tmp_path, capsys):
    path = _spec(tmp_path, GOOD.replace('  path "a.jsonl"', 'path   "a.jsonl"   # data'))
    assert main(["fmt", "--check", str(path)]) == 1
    assert f"would reformat {path}" in capsys.readouterr().out
    before = path.read_text()
    assert main(["fmt", str(path)]) == 0
    after = path.read_text()
    assert after != before and '  path   "a.jsonl"  # data' in after
    assert main(["fmt", "--check", str(path)]) == 0


def test_fmt_refuses_files_with_syntax_errors(tmp_path, capsys):
    path = tmp_path / "bad.mix"
    path.write_text("source a {\n  take 1\n}\n")
    assert main(["fmt", str(path)]) == 1
    assert path.read_text() == "source a {\n  take 1\n}\n"
    assert f"{path}:2:8" in capsys.readouterr().err


def test_plan_table_and_json(tmp_path, capsys):
    path = _spec(tmp_path, GOOD)
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "mix m: 10 samples" in out and "2.00" in out
    assert main(["plan", "--json", str(path)]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["m"]["total"] == 10
    assert plan["m"]["takes"] == [{"source": "a", "records": 5, "samples": 10, "epochs": 2.0, "share": 1.0,
                                   "share_asked": "100%"}]


def test_plan_reports_missing_data_and_infeasible_mixes(tmp_path, capsys):
    path = _spec(tmp_path, GOOD.replace('"a.jsonl"', '"missing.jsonl"'))
    assert main(["plan", str(path)]) == 1
    assert "missing.jsonl" in capsys.readouterr().err
    path = _spec(tmp_path, GOOD.replace("take a 100%", "take a 100% max_epochs 1"))
    assert main(["plan", str(path)]) == 1
    err = capsys.readouterr().err
    assert "E603" in err and "`a` would need 2.00 epochs" in err and "largest total that fits is 5" in err


def test_plan_by_tokens_needs_the_tokenizer(tmp_path, capsys):
    """(With a real tokenizer and no token cache yet it is E604: tests/compiler/test_build.py.)"""
    path = _spec(tmp_path, GOOD.replace("total 10 samples", "total 10K tokens\n  by tokens"))
    assert main(["plan", str(path)]) == 1
    err = capsys.readouterr().err
    assert "E701" in err and "cannot load tokenizer `tok`" in err


def test_plan_unknown_mix_is_a_usage_error(tmp_path, capsys):
    assert main(["plan", "--mix", "nope", str(_spec(tmp_path, GOOD))]) == 2


def test_check_does_not_import_heavy_libraries():
    code = ("import sys; from runner.cli import main; "
            f"rc = main(['check', {str(EXAMPLES / 'customer_sweep.mix')!r}]); "
            "heavy = [m for m in ('torch', 'transformers', 'datasets', 'pyarrow') if m in sys.modules]; "
            "print(heavy); sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_console_script_runs(tmp_path):
    mixc = pathlib.Path(sys.executable).with_name("mixc")
    result = subprocess.run([str(mixc), "check", str(_spec(tmp_path, GOOD))], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
