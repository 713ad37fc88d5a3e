"""Reports for people and programs: plans (and later runs and verdicts) as tables and JSON.

Takes typed values from the compiler (`MixPlan`); produces text. No I/O beyond returning
strings; the CLI prints them.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence

from compiler.plan import MixPlan, percent


def _asked(plan: MixPlan, source: str) -> str:
    take = next(t for t in plan.target.mix.takes if t.source == source)
    if take.rest:
        return "rest"
    if take.share is None:
        return f"T={float(plan.target.mix.temperature or 1):g}" 
    return percent(take.share)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """A plain-text table; the first `left` columns are left-aligned, the rest right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    def line(r: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def plan_table(plans: Sequence[MixPlan]) -> str:
    return "\n\n".join(_one_table(p) for p in plans)


def _one_table(plan: MixPlan) -> str:
    a = plan.allocation
    mix = plan.target.mix
    unit = "tokens" if plan.tokens is not None else "samples"
    title = f"mix {plan.target.name}: {a.total:,} {unit}"
    title += f" (total {mix.total.amount:,})" if mix.total else " (no total: the scarcest source used whole)"
    header = ["source", "records", "share asked", "share realized", "samples", "epochs", "max_epochs"]
    if plan.tokens is not None:
        header[4:4] = ["tokens"]
    rows = []
    for i, take in enumerate(a.takes):
        samples = plan.samples[i] if plan.samples is not None else take.samples
        cap = "" if take.max_epochs is None else f"{float(take.max_epochs):g}"
        epochs = samples / plan.counts[i].size if plan.counts[i].size else 0.0
        row = [take.source, f"{plan.counts[i].size:,}", _asked(plan, take.source),
               f"{take.share * 100:.2f}%", f"{samples:,}", f"{epochs:.2f}", cap]
        if plan.tokens is not None:
            row[4:4] = [f"{plan.tokens[i]:,}"]
        rows.append(row)
    notes = [_note(c) for c in plan.counts if _note(c)]
    return "\n".join([title, table(header, rows)] + notes)


def _note(count) -> str:  # noqa: ANN001 - a SourceCount
    parts = [f"{n:,} {what}" for n, what in ((count.held_out, "held out"), (count.duplicates, "duplicates dropped"),
                                              (count.broken, "broken records skipped"), (count.limited, "over the limit"))
             if n]
    return f"  {count.name}: {count.raw:,} records read; " + ", ".join(parts) if parts else ""


def plan_json(plans: Sequence[MixPlan]) -> dict:
    """One object keyed by mix (or sweep point) name: `total` (samples) and `takes`."""
    out = {}
    for plan in plans:
        takes = []
        for i, t in enumerate(plan.allocation.takes):
            samples = plan.samples[i] if plan.samples is not None else t.samples
            size = plan.counts[i].size
            entry = {"source": t.source, "records": size, "samples": samples,
                     "epochs": samples / size if size else 0.0, "share": t.share,
                     "share_asked": _asked(plan, t.source)}
            if plan.tokens is not None:
                entry["tokens"] = plan.tokens[i]
            takes.append(entry)
        out[plan.target.name] = {"mix": plan.target.mix.name, "sweep": plan.target.sweep, "by": plan.target.mix.by,
                                 "total": sum(e["samples"] for e in takes), "takes": takes}
        if plan.tokens is not None:
            out[plan.target.name]["tokens"] = sum(plan.tokens)
    return out


def build_table(report: dict) -> str:
    """Per target: each take's counts; then packing and stage times."""
    parts = []
    for name, t in report["targets"].items():
        train, val = t["train"], t["validation"]
        rows = [[k["source"], f"{k['records']:,}", f"{k['samples']:,}", f"{k['tokens']:,}", f"{k['loss_tokens']:,}",
                 f"{k['epochs']:.2f}", f"{k['share_samples'] * 100:.2f}%", f"{k['share_tokens'] * 100:.2f}%"]
                for k in t["takes"]]
        header = ["source", "records", "samples", "tokens", "loss tokens", "epochs", "share (samples)", "share (tokens)"]
        parts.append(f"{name}: {train['samples']:,} samples, {train['tokens']:,} tokens in {train['rows']:,} rows "
                     f"(packing efficiency {train['packing_efficiency'] * 100:.1f}%); validation "
                     f"{val['samples']:,} samples\n" + table(header, rows))
        parts[-1] += "".join(f"\n  {_accounted(src, c)}" for src, c in t["sources"].items())
        parts[-1] += "".join(f"\n    broken: {line}" for lines in t.get("broken_examples", {}).values()
                             for line in lines)
    timings = ", ".join(f"{k} {v:.2f}s" for k, v in report["timings"].items())
    return "\n\n".join(parts) + f"\n\ntime: {timings}"


_ACCOUNTS = ("used", "unused", "held_out", "duplicates", "broken", "overlong_dropped", "overlong_truncated",
             "limited", "repeated")


def _accounted(source: str, counts: dict) -> str:
    """`customer: 1,500 records: 1,430 used, 70 held out` — every record of the source."""
    parts = [f"{counts[k]:,} {k.replace('_', ' ')}" for k in _ACCOUNTS if counts.get(k)]
    return f"{source}: {counts['raw']:,} records: " + ", ".join(parts)


def verdict_table(judged: Sequence) -> str:
    """One row per gate of every entry: metric, base, candidate, threshold, pass/fail."""
    rows = []
    for entry, verdicts in judged:
        if verdicts is None:
            rows.append([entry.target, "(no metrics.json)", "", "", "", "", "FAIL"])
            continue
        for v in verdicts:
            rows.append([entry.target, v.metric, _num(v.base), _num(v.candidate), f"{v.comparator} {v.rule}",
                         _num(v.threshold), "pass" if v.passed else "FAIL"])
    verdict = "PASS" if rows and all(r[-1] == "pass" for r in rows) else "FAIL"
    return table(["entry", "metric", "base", "candidate", "gate", "threshold", "verdict"], rows, left=2) + \
        f"\n\nverdict: {verdict}"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def run_table(judged: Sequence) -> str:
    """One row per entry (sweep point): its shares, every metric (candidate, base), every gate."""
    import json
    import os

    metric_names = list(dict.fromkeys(g["metric"] for e, _ in judged for g in e.gates))
    header = ["entry", "shares"] + [f"{m} (base)" for m in metric_names] + ["gates"]
    rows = []
    for entry, verdicts in judged:
        metrics = {}
        path = os.path.join(entry.run_dir, "metrics.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                metrics = json.load(f)
        shares = ", ".join(f"{k}={float(Fraction(v)) * 100:g}%" for k, v in entry.point.items()) or "-"
        cells = [f"{_num(metrics.get('candidate', {}).get(m))} ({_num(metrics.get('base', {}).get(m))})" for m in metric_names]
        gates = "no metrics" if verdicts is None else " ".join(
            f"{v.metric}{v.comparator}{v.rule}:{'pass' if v.passed else 'FAIL'}" for v in verdicts)
        rows.append([entry.target, shares, *cells, gates])
    return table(header, rows, left=2)
