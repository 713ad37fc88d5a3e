"""Checking `train`, `eval` and `sweep` blocks: syntax blocks in, typed specs out.

Part of the checker (see `mixlang.check`): each function reports problems through the shared
`BlockReader` and returns the spec, or None when the block has errors.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping, Sequence

from mixlang import syntax as s
from mixlang import values as v
from mixlang.check_blocks import BlockReader, Fields, get, resolve_model, resolve_path, span_of
from mixlang.check_sources import Blocks, call_args, check_shares, template_syntax
from mixlang.diagnostics import Label, did_you_mean, error
from mixlang.program import (EvalSpec, GateSpec, MetricSpec, MixSpec, ResourcesSpec, SourceSpec,
                             SweepSpec, TrainSpec, VarySpec)

TRAIN_SCHEMA: dict[str, v.Reader] = {
    "data": v.name, "model": v.string, "epochs": v.positive, "lr": v.positive,
    "batch": v.positive_integer, "micro_batch": v.positive_integer, "warmup": v.fraction,
    "precision": v.choice("bf16", "fp16", "fp32"),
}



def check_train(block: s.Block, reader: BlockReader, blocks: Blocks) -> TrainSpec | None:
    before = reader.errors
    fields = reader.read(block, TRAIN_SCHEMA, items=(s.Resources,), required=("data", "model"))
    resources = _resources(block, reader)
    _data_is_mix(fields, reader, blocks)
    _batch_fits(block, fields, resources, reader)
    if reader.errors > before:
        return None
    defaults = TrainSpec(name="", data="", model="")
    return TrainSpec(
        name=block.name.name, data=get(fields, "data"),
        model=resolve_model(get(fields, "model"), span_of(fields, "model")),
        epochs=get(fields, "epochs", defaults.epochs), lr=get(fields, "lr", defaults.lr),
        batch=get(fields, "batch", defaults.batch),
        micro_batch=get(fields, "micro_batch", defaults.micro_batch),
        warmup=get(fields, "warmup", defaults.warmup),
        precision=get(fields, "precision", defaults.precision), resources=resources, span=block.span,
    )


def _resources(block: s.Block, reader: BlockReader) -> ResourcesSpec:
    found = [i for i in block.items if isinstance(i, s.Resources)]
    for extra in found[1:]:
        reader.report(error("E401", "a block has at most one `resources` block", extra.span,
                            labels=(Label(found[0].span, "first here"),) if found[0].span else ()))
    if not found:
        return ResourcesSpec()
    fields = reader.pairs(found[0].entries, v.RESOURCES, "a `resources` block (Slurm parameters)")
    return ResourcesSpec(tuple((k, val) for k, (val, _) in fields.items()))


def _data_is_mix(fields: Fields, reader: BlockReader, blocks: Blocks) -> None:
    data = get(fields, "data")
    if data is None or data in blocks["mix"]:
        return
    other = next((k for k in ("source", "train", "sweep") if data in blocks[k]), None)
    message = f"`{data}` is a {other}, not a mix" if other else f"unknown mix `{data}`"
    reader.report(error("E402", message, span_of(fields, "data"),
                        help=did_you_mean(data, blocks["mix"]) or "`data` names a mix of this program"))


def _batch_fits(block: s.Block, fields: Fields, resources: ResourcesSpec, reader: BlockReader) -> None:
    written = {i.key for i in block.items if isinstance(i, s.Attribute)}
    written |= {e.key for r in block.items if isinstance(r, s.Resources) for e in r.entries}
    read = set(fields) | {k for k, _ in resources.values}
    if any(k in written and k not in read for k in ("batch", "micro_batch", "nodes", "gpus_per_node")):
        return  # a rejected value (reported already) would be replaced by its default here
    batch, micro = get(fields, "batch", 8), get(fields, "micro_batch", 1)
    ranks = int(resources.get("nodes", 1)) * max(int(resources.get("gpus_per_node", 1)), 1)
    if batch % (micro * ranks):
        reader.report(error("E403", f"`batch` {batch} is not a multiple of `micro_batch` {micro} "
                                    f"times {ranks} GPU(s)", span_of(fields, "batch") or span_of(fields, "micro_batch"),
                            help="batch = micro_batch x GPUs x gradient accumulation steps"))


# ---- eval ---------------------------------------------------------------------------------

METRICS: dict[str, tuple[dict[str, v.Reader], tuple[str, ...]]] = {
    "classify": ({"data": v.string, "prompt": v.string, "label": v.string,
                  "average": v.choice("macro", "micro"), "method": v.choice("loglik", "generate"),
                  "labels": lambda val, key: _strings(val, key)}, ("data", "prompt", "label")),
    "choice": ({"data": v.string}, ("data",)),
    "loss": ({"source": v.name}, ("source",)),
}


def _strings(value: s.Value, key: str) -> tuple[str, ...]:
    if not isinstance(value, s.ListVal) or not value.items:
        raise v.BadValue(f"`{key}` expects a list of strings such as `[\"a\", \"b\"]`")
    return tuple(v.string(item, key) for item in value.items)


def check_eval(block: s.Block, reader: BlockReader, blocks: Blocks,
               sources: Sequence[SourceSpec]) -> EvalSpec | None:
    before = reader.errors
    reader.read(block, {}, items=(s.Metric, s.Gate, s.Resources))
    if block.name.name not in blocks["train"]:
        reader.report(error("E404", f"eval for unknown train `{block.name.name}`", block.name.span,
                            help=did_you_mean(block.name.name, blocks["train"])
                            or "an eval is named after the train whose checkpoint it evaluates"))
    metrics = _metrics(block, reader, {src.name: src for src in sources}, blocks)
    gates = _gates(block, reader, metrics)
    resources = _resources(block, reader)
    if reader.errors > before:
        return None
    return EvalSpec(block.name.name, tuple(metrics.values()), tuple(gates), resources, block.span)


def _metrics(block: s.Block, reader: BlockReader, sources: Mapping[str, SourceSpec],
             blocks: Blocks) -> dict[str, MetricSpec]:
    metrics: dict[str, MetricSpec] = {}
    for item in (i for i in block.items if isinstance(i, s.Metric)):
        name = item.name.name
        if name in metrics:
            reader.report(error("E405", f"metric `{name}` is defined twice", item.name.span))
            continue
        spec = _metric(item, reader, sources, blocks)
        if spec is not None:
            metrics[name] = spec
    return metrics


def _metric(item: s.Metric, reader: BlockReader, sources: Mapping[str, SourceSpec],
            blocks: Blocks) -> MetricSpec | None:
    call = item.call
    if call.name not in METRICS:
        reader.report(error("E406", f"unknown metric kind `{call.name}`", call.span,
                            help=did_you_mean(call.name, METRICS) or "use classify, choice or loss"))
        return None
    schema, required = METRICS[call.name]
    try:
        args = call_args(call, schema)
        missing = [k for k in required if k not in args]
        if missing:
            raise v.BadValue(f"`{call.name}(...)` needs `{missing[0]}`")
        if "prompt" in args:
            template_syntax(args["prompt"], "prompt")
    except v.BadValue as e:
        reader.report(error("E407", e.message, call.span, help=e.help))
        return None
    if "data" in args:
        args["data"] = resolve_path(args["data"], call.span)
    if call.name == "loss" and not _loss_source(args["source"], call, reader, sources, blocks):
        return None
    return MetricSpec(item.name.name, call.name, tuple(args.items()), item.span)


def _loss_source(name: str, call: s.Call, reader: BlockReader, sources: Mapping[str, SourceSpec],
                 blocks: Blocks) -> bool:
    if name not in blocks["source"]:
        reader.report(error("E408", f"unknown source `{name}`", call.span,
                            help=did_you_mean(name, blocks["source"])))
        return False
    if name in sources and sources[name].holdout == 0:
        reader.report(error("E409", f"`loss(source = {name})` needs a holdout, and source `{name}` has none",
                            call.span, help=f"add `holdout 2%` to source `{name}`"))
        return False
    return True


def _gates(block: s.Block, reader: BlockReader, metrics: Mapping[str, MetricSpec]) -> list[GateSpec]:
    gates = []
    defined = {i.name.name for i in block.items if isinstance(i, s.Metric)}
    for gate in (i for i in block.items if isinstance(i, s.Gate)):
        name = gate.metric.name
        if name not in defined:
            reader.report(error("E410", f"gate on undefined metric `{name}`", gate.metric.span,
                                help=did_you_mean(name, defined) or "define it with `metric NAME = ...`"))
            continue
        gates.append(_gate(gate))
    return gates


def _gate(gate: s.Gate) -> GateSpec:
    rhs = gate.rhs
    if isinstance(rhs, s.Num):
        return GateSpec(gate.metric.name, gate.comparator, rhs.value, span=gate.span)
    if isinstance(rhs, s.Base):
        return GateSpec(gate.metric.name, gate.comparator, None, None, True, gate.span)
    return GateSpec(gate.metric.name, gate.comparator, rhs.operand.value, rhs.op, True, gate.span)


# ---- sweep --------------------------------------------------------------------------------


def check_sweep(block: s.Block, reader: BlockReader, mixes: Sequence[MixSpec],
                blocks: Blocks) -> SweepSpec | None:
    before = reader.errors
    reader.read(block, {}, items=(s.Vary,))
    checked = {m.name: m for m in mixes}
    varies = [_vary(item, reader, checked, blocks) for item in block.items if isinstance(item, s.Vary)]
    varies = [vary for vary in varies if vary is not None]
    if not any(isinstance(i, s.Vary) for i in block.items):
        reader.report(error("E411", f"sweep `{block.name.name}` varies nothing", block.name.span,
                            help="add `vary MIX.TAKE in [shares]`"))
    _no_repeats(varies, reader)
    if reader.errors > before:
        return None
    return SweepSpec(block.name.name, tuple(varies), block.span)


def _vary(item: s.Vary, reader: BlockReader, mixes: Mapping[str, MixSpec],
          blocks: Blocks) -> VarySpec | None:
    mix = mixes.get(item.mix.name)
    if mix is None:
        if item.mix.name not in blocks["mix"]:  # else the mix has errors of its own, reported
            reader.report(error("E412", f"unknown mix `{item.mix.name}`", item.mix.span,
                                help=did_you_mean(item.mix.name, blocks["mix"])))
        return None
    take = next((t for t in mix.takes if t.source == item.take.name), None)
    if take is None or take.rest:
        message = (f"`{item.take.name}` is the `rest` take of mix `{mix.name}`; it cannot be varied"
                   if take else f"mix `{mix.name}` has no take `{item.take.name}`")
        reader.report(error("E413", message, item.take.span,
                            help=did_you_mean(item.take.name, [t.source for t in mix.takes if not t.rest])))
        return None
    values = reader.value(v.share_list, item.values, "vary")
    if values is None:
        return None
    for value, node in zip(values, item.values.items):
        takes = [replace(t, share=value) if t is take else t for t in mix.takes]
        check_shares(f"{mix.name}` with `{take.source}` at `{node.text}", takes, reader, node.span)
    return VarySpec(mix.name, take.source, values, item.span)


def _no_repeats(varies: list[VarySpec], reader: BlockReader) -> None:
    seen: set[tuple[str, str]] = set()
    for vary in varies:
        key = (vary.mix, vary.take)
        if key in seen:
            reader.report(error("E414", f"`{vary.mix}.{vary.take}` is varied twice", vary.span))
        seen.add(key)
