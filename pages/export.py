"""Export: download an architecture as genotype JSON, PyTorch checkpoint, TorchScript and ONNX.

The files are written (and checked by reloading) by nas_core.export in the worker; when one is missing
but the trained checkpoint exists, this page recreates it with the same function.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from dashboard.common import bootstrap, guarded, query_int, show_error
from nas_core import viz
from nas_core.spaces import get_space
from storage import repo

bootstrap("Export")  # first: this page may be the first request after a server start

KINDS = {
    "genotype_json": ("Genotype JSON", "genotype.json", "application/json"),
    "checkpoint": ("PyTorch checkpoint", "model.pt", "application/octet-stream"),
    "torchscript": ("TorchScript", "model.torchscript.pt", "application/octet-stream"),
    "onnx": ("ONNX", "model.onnx", "application/octet-stream"),
}
REGENERATED = "regenerated"  # sub-folder of the checkpoint's folder for exports recreated here
REBUILD = """\
import json

import torch
from nas_core.export import build_from_document, load_checkpoint

model, doc = load_checkpoint("{ckpt}")  # the trained network (torch.load with weights_only=True)
fresh = build_from_document(json.load(open("{json}")))  # the same architecture, untrained
scripted = torch.jit.load("{ts}")  # TorchScript needs only torch

import onnxruntime  # ONNX needs neither torch nor this project; the batch axis is dynamic

session = onnxruntime.InferenceSession("{onnx}")
logits = session.run(None, {{"input": images_as_float32_numpy}})[0]
"""


def artifact_files(arch: dict[str, Any]) -> dict[str, Path]:
    """Existing export files of this architecture: the experiment's artifacts beside its checkpoint."""
    ckpt = arch.get("checkpoint_path")
    if not ckpt or pd.isna(ckpt):
        return {}
    folder = Path(ckpt).parent
    found: dict[str, Path] = {}
    artifacts = repo.artifacts_df(int(arch["experiment_id"]))
    for kind, path in zip(artifacts["kind"], artifacts["path"]):
        p = Path(path)
        if kind in KINDS and p.parent in (folder, folder / REGENERATED) and p.is_file():
            found[kind] = p  # later rows (recreated files) win
    if Path(ckpt).is_file():
        found.setdefault("checkpoint", Path(ckpt))
    return found


def recreate(arch: dict[str, Any], missing: list[str]) -> None:
    """Rebuild the trained network from its checkpoint and export it again; each file is reloaded and checked."""
    from nas_core.export import export_all, load_checkpoint, sha256

    ckpt = Path(arch["checkpoint_path"])
    problems: list[str] = []
    model, doc = load_checkpoint(ckpt)
    net = doc["network"]
    paths = export_all(
        model, arch["space"], arch["genotype"], doc.get("config"), tuple(net["input_shape"]), ckpt.parent / REGENERATED,
        num_classes=net["num_classes"], channels=net["channels"], cells_per_stage=net["cells_per_stage"],
        log=problems.append,
    )  # fmt: skip
    rows = [{"kind": k, "path": p, "checksum": sha256(p)} for k, p in paths.items() if k in missing]
    repo.write_batch(int(arch["experiment_id"]), artifacts=rows)
    if problems and "onnx" in missing:  # what could not be made is said, the rest is kept
        raise RuntimeError("; ".join(problems))


def _label(arch: dict[str, Any]) -> str:
    acc = viz.format_number(arch["accuracy"], ".2f", " %", 100.0)
    macs = viz.format_number(arch["macs"], ".2f", " M MACs", 1e-6)
    name = f" {arch['experiment_name']}" if arch.get("experiment_name") else ""
    kind = f" ({arch['accuracy_kind']})" if arch.get("accuracy_kind") else ""
    return f"#{arch['id']} · experiment #{arch['experiment_id']}{name} · {acc}{kind} · {macs}"


def _facts(arch: dict[str, Any]) -> pd.DataFrame:
    threads = f", {int(arch['latency_threads'])} thread(s)" if not pd.isna(arch.get("latency_threads")) else ""
    facts = {
        "accuracy": viz.format_number(arch["accuracy"], ".2f", " %", 100.0) + f" ({arch['accuracy_kind'] or '?'})",
        "MACs": viz.format_number(arch["macs"], ".3f", " M", 1e-6),
        "params": viz.format_number(arch["params"], ".4f", " M", 1e-6),
        "latency (batch 1)": viz.format_number(arch["latency_ms"], ".3f", " ms") + threads,
        "measured on": str(arch.get("latency_device") or "–"),
        "experiment": f"#{arch['experiment_id']} {arch.get('experiment_name') or ''}".strip(),
        "strategy / data": f"{arch['strategy']} / {arch['dataset']}",
        "origin": str(arch["origin"]),
    }
    return pd.DataFrame({"value": facts})


def _downloads(arch: dict[str, Any], space: Any) -> None:
    files = artifact_files(arch)
    prefix = f"nas_arch{arch['id']}_"
    cols = st.columns(len(KINDS))
    for col, (kind, (label, name, mime)) in zip(cols, KINDS.items()):
        path = files.get(kind)
        if path is not None:
            col.download_button(label, data=path.read_bytes, file_name=prefix + name, mime=mime, key=f"dl_{kind}",
                                icon=":material/download:", help=str(path))  # fmt: skip
        elif kind == "genotype_json":
            doc = json.dumps(space.to_json(arch["genotype"]), indent=2)
            col.download_button(label + " (cell only)", data=doc, file_name=prefix + name, mime=mime, key=f"dl_{kind}",
                                icon=":material/download:", help="Written from the stored genotype")  # fmt: skip
        else:
            col.button(label + " (not available)", disabled=True, key=f"na_{kind}")
    missing = [k for k in KINDS if k not in files]
    ckpt = arch.get("checkpoint_path")
    if missing and files.get("checkpoint") is not None:
        if st.button(f"Create the missing exports ({', '.join(KINDS[k][0] for k in missing)}) from the checkpoint"):
            with st.spinner("Exporting and checking the reloaded outputs..."):
                try:
                    recreate(arch, missing)
                except Exception as exc:  # noqa: BLE001
                    show_error("Export failed", exc)
                    return
            st.rerun()
    elif files.get("checkpoint") is None:
        where = f" (expected at {ckpt})" if ckpt and not pd.isna(ckpt) else ""
        st.info(
            f"This architecture has no trained checkpoint{where}, so only its genotype can be exported. "
            "Train it from scratch with the command below, then export from its experiment."
        )
        st.code(f"python -m nas_core train --space {arch['space']} --genotype '{arch['genotype']}' "
                f"--dataset {arch['dataset']} --epochs 15 --json", language="bash")  # fmt: skip
    if files:
        with st.expander("Rebuild the model in Python"):
            st.code(REBUILD.format(ckpt=prefix + "model.pt", json=prefix + "genotype.json",
                                   ts=prefix + "model.torchscript.pt", onnx=prefix + "model.onnx"),
                    language="python")  # fmt: skip


@guarded
def main() -> None:
    st.title("Export an architecture")
    archs = repo.architectures_df()
    if archs.empty:
        st.info("No architectures yet: they appear when a search finishes.")
        return
    records = {int(r["id"]): r for r in archs.sort_values("id", ascending=False).to_dict("records")}
    ids = list(records)
    wanted = query_int("arch")
    arch_id = st.selectbox("Architecture", ids, index=ids.index(wanted) if wanted in ids else 0,
                           format_func=lambda i: _label(records[i]))  # fmt: skip
    if wanted != arch_id:
        st.query_params["arch"] = str(arch_id)
    arch = records[arch_id]
    space = get_space(arch["space"])
    left, right = st.columns([2, 3])
    with left:
        st.table(_facts(arch))
    with right:
        st.graphviz_chart(space.to_dot(arch["genotype"]))
    st.code(arch["genotype"], language="text")
    st.subheader("Downloads")
    _downloads(arch, space)


main()
