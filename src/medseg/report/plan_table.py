"""The report's Plan section: the plan the run trained with (run.json "plan", the user's
overrides included), as a table a reader can take in: one row per setting with its value in
words and the planner's reason, then the budget it was planned for and the planner's cost
estimate, compared with the model that was built (the Model section) so the two never disagree
without saying why."""
from __future__ import annotations

from html import escape

# (plan key, row title), in the order `medseg plan` prints them
ROWS = (("spatial_dims", "dimensions"), ("target_spacing", "voxel size (mm)"), ("image_size", "working image size"),
        ("crop_nonzero", "crop to the non-zero box"), ("patch_size", "patch"), ("batch_size", "batch"),
        ("model", "network"), ("features", "channels per level"), ("strides", "downsampling strides"),
        ("kernels", "convolution kernels"), ("normalization", "intensity normalisation"), ("loss", "loss"),
        ("deep_supervision", "deep supervision"), ("minutes", "time budget"), ("epochs", "epochs"),
        ("iterations_per_epoch", "steps per epoch"))


def _axes(values) -> str:
    return " × ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def plan_value(key: str, value, plan: dict) -> str:
    """One plan setting in words: "64 × 64", "16, 32, 64", "native grid", "yes"."""
    if value is None:
        return {"target_spacing": "each case's own grid", "image_size": "native grid", "minutes": "none (epochs)",
                "epochs": "none (minutes)"}.get(key, "—")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "spatial_dims":
        return f"{value}D"
    if key in ("target_spacing", "patch_size"):
        return _axes(value)
    if key == "image_size":
        return f"{value} px (longer side)"
    if key == "features":
        return ", ".join(map(str, value))
    if key in ("strides", "kernels") and isinstance(value, list):
        return ", ".join(_axes(v) for v in value) if value else "none"
    if key == "normalization" and isinstance(value, list):
        names = (plan.get("fingerprint") or {}).get("channels") or [f"channel {i}" for i in range(len(value))]
        return "; ".join(f"{n}: {_scheme(s)}" for n, s in zip(names, value))
    if key == "minutes":
        return f"{value:g} min"
    return str(value)


def _scheme(spec: dict) -> str:
    if spec.get("scheme") == "ct":
        return f"CT, clipped to {spec.get('lower', 0):.0f}..{spec.get('upper', 0):.0f}, dataset mean and std"
    return "z-score per case" if spec.get("scheme") == "zscore" else str(spec.get("scheme"))


def _budget(budget: dict) -> str:
    parts = [str(budget.get("device", "?"))]
    if (budget.get("card") or {}).get("name"):  # a GPU plan: the card it was planned for
        parts[0] += f" ({budget['card']['name']})"
    if budget.get("memory_gb") is not None:
        parts.append(f"{budget['memory_gb']:g} GB memory")
    if budget.get("threads"):
        parts.append(f"{budget['threads']} thread(s)")
    parts.append(f"{budget['minutes']:g} min" if budget.get("minutes") else "no time limit")
    return ", ".join(parts)


def estimate_row(estimate: dict, budget: dict, cost: dict) -> tuple[str, str]:
    """(value, note) of the planner's estimate: its figures, and how they compare with the model
    that was built (`cost`: parameters and FLOPs counted from the checkpoint)."""
    figures = []
    if estimate.get("parameters") is not None:
        figures.append(f"{int(estimate['parameters']):,} parameters")
    if estimate.get("forward_gflops_per_patch") is not None:
        figures.append(f"{estimate['forward_gflops_per_patch']:g} GFLOPs per patch (forward)")
    if estimate.get("step_seconds") is not None:
        figures.append(f"{estimate['step_seconds']:g} s per training step")
    if estimate.get("steps_in_budget") and budget.get("minutes"):
        figures.append(f"~{int(estimate['steps_in_budget']):,} steps in {budget['minutes']:g} min")
    if estimate.get("memory_gb") is not None:
        memory = estimate["memory_gb"]
        figures.append(f"~{memory:g} GB training memory" if memory >= 0.01 else "under 0.01 GB training memory")
    note = "an estimate, made before training, for " + estimate.get("network", "the planned network")
    built = cost.get("parameters")
    if built and estimate.get("parameters") is not None:
        if int(built) == int(estimate["parameters"]):
            note += "; its parameters agree with the model built (Model section)"
        else:
            note += (f"; the model built has {int(built):,} parameters"
                     + (f" and {cost['flops'] / 1e9:.2f} GFLOPs" if cost.get("flops") else "")
                     + " (Model section): those are the counted figures")
    return ", ".join(figures) or "-", note


def plan_section(plan, cost: dict | None = None) -> str:
    """The Plan section's HTML (see the module docstring)."""
    if not plan:
        return '<p class="muted">This run has no plan (trained with fixed rules).</p>'
    if not isinstance(plan, dict):
        return f'<p class="muted">The plan is not readable here: {escape(str(plan)[:200])}</p>'
    reasons = plan.get("reasons") or {}
    rows = [(title, plan_value(key, plan[key], plan), reasons.get(key, "")) for key, title in ROWS if key in plan]
    if plan.get("budget"):
        rows.append(("planned for", _budget(plan["budget"]), "the device, memory and minutes the plan was made for"))
    if plan.get("estimate"):
        value, note = estimate_row(plan["estimate"], plan.get("budget") or {}, cost or {})
        rows.append(("cost estimate", value, note))
    body = "".join(f"<tr><th>{escape(t)}</th><td>{escape(v)}</td><td class=\"why\">{escape(w)}</td></tr>"
                   for t, v, w in rows)
    return (f'<table class="plan"><thead><tr><th>setting</th><th>value</th><th>why</th></tr></thead>'
            f"<tbody>{body}</tbody></table>"
            '<p class="note">The plan this run trained with (RUN/plan.json); settings marked "set by the user" '
            "are overrides of the planned value.</p>")
