"""The `medseg` command: a thin layer over the Python functions of the same names."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .cli_serve import add_serve_parser, run_serve
from .errors import MedsegInputError, error_line

EPILOG = """\
typical use:
  medseg train DATA --out RUN --minutes 10     DATA: images/ + labels/ (2D or 3D), an MSD or nnU-Net folder
  medseg predict RUN NEW_IMAGES --out PRED      one mask + one overlay per image / volume / DICOM series
  medseg suggest RUN UNLABELLED                 which cases (3D: which slices) to label next
  medseg evaluate PRED LABELS                   per-class Dice, HD95, ASSD, surface Dice, ... (CSV + JSON)
  medseg report RUN                             one HTML page: curves, metrics, overlays (RUN/report.html)
  medseg convert brats SRC --out DATA           BraTS 2013 folders -> nnU-Net layout (FLAIR + T1c)
  medseg demo                                   all of the above on synthetic data, ~3 min
"""


def _int_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.replace("x", ",").split(",") if v)


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to compute; auto picks CUDA when a GPU is present (default: auto)")


def _add_label_suffix(p: argparse.ArgumentParser) -> None:
    p.add_argument("--label-suffix", dest="label_suffix", metavar="SUFFIX",
                   help="side-by-side masks (mask beside its image, named by a suffix): which suffix to train on, "
                   "e.g. _2ndHO for CHASE_DB1's second observer (default: the one recognised suffix; docs/data.md)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medseg", description="Medical image segmentation: train a U-Net on labelled images, "
        "predict new ones, evaluate and draw the results.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error "
                        "(also MEDSEG_DEBUG=1); without it, an error is one line naming the file")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train a model on a labelled dataset",
                       description="Train a U-Net on DATA: images/ + labels/ (or masks/, same file stems; "
                       "PNG/JPEG/TIFF or NIfTI/NRRD/MHA), a Medical Segmentation Decathlon folder or an "
                       "nnU-Net v2 folder (dataset.json). "
                       "The whole dataset is checked before training starts. Writes RUN/ with checkpoints "
                       "(best.pt, last.pt), log.csv, learning_curves.png and run.json.")
    p.add_argument("data", type=Path, help="dataset folder (images/ + labels/, or dataset.json + imagesTr/ + labelsTr/)")
    p.add_argument("--out", type=Path, required=True, help="run folder to create (must be new or empty)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, help="number of epochs (of --iterations-per-epoch steps)")
    budget.add_argument("--minutes", type=float, help="wall-clock budget including loading and validation "
                        "(default: the plan's, 20 on a CPU); with --folds it is shared by the folds")
    p.add_argument("--val-fraction", type=float, help="fraction of cases held out for validation "
                   "(default: 0.2, at most 50 cases; 0 for none)")
    p.add_argument("--seed", type=int, default=0, help="seed for the split, initialisation and augmentation")
    p.add_argument("--model", help="unet (default, light), unet-classic (the original 31M-parameter "
                   "U-Net), resunet, vnet, fcn, unetr, swinunetr; `medseg models` compares them")
    p.add_argument("--features", type=_int_tuple, help="channels per level of the unet, e.g. 32,64,128,256,512")
    p.add_argument("--norm", choices=["batch", "instance", "group", "none"], help="normalisation layers of the unet")
    p.add_argument("--loss", choices=["dice+ce", "dice", "dice-squared", "ce", "weighted-dice", "generalised-dice",
                                      "tversky", "focal", "dice+focal"],
                   help="training loss (default dice+ce; weighted-dice uses inverse class frequency)")
    p.add_argument("--loss-option", dest="loss_option", action="append", default=[], metavar="KEY=VALUE",
                   help="loss setting (JSON value), e.g. --loss-option alpha=0.3 --loss-option batch_dice=true; "
                   "repeatable (README: Losses)")
    _add_label_suffix(p)
    p.add_argument("--ignore-label", dest="ignore_label", type=float, metavar="VALUE",
                   help="sparse labels: the mask value meaning 'not annotated' (e.g. 255); such voxels count in "
                   "no loss and no metric (a dataset.json label named \"ignore\" sets it too)")
    p.add_argument("--deep-supervision", action="store_true", help="unet/resunet: also supervise the coarser "
                   "decoder outputs (weights halving per scale)")
    p.add_argument("--batch-size", type=int, help="patches per step")
    p.add_argument("--patch-size", type=_int_tuple, help="training patch, e.g. 256x256 (default: from the data)")
    p.add_argument("--image-size", help="2D: longer side of the working grid: auto (default), native, or a number")
    p.add_argument("--target-spacing", type=lambda t: tuple(float(v) for v in t.replace("x", ",").split(",")),
                   help="3D: voxel size (mm, array axis order) to resample to (default: the dataset's median)")
    p.add_argument("--no-crop", action="store_true", help="3D: do not crop cases to their non-zero region")
    p.add_argument("--no-cache", action="store_true", help="do not keep resampled cases on disk "
                   "($MEDSEG_CACHE, default ~/.cache/medseg/preprocessed)")
    p.add_argument("--iterations-per-epoch", type=int, help="steps between validations/checkpoints")
    p.add_argument("--lr", type=float, help="initial learning rate of AdamW (warm-up, then polynomial decay)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="auto measures whether bf16 is faster here")
    p.add_argument("--no-augment", action="store_true", help="switch off augmentation")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the network for training steps: ~30 s of compilation, then markedly faster "
                   "steps on a CPU (docs/decisions.md); default: on for CPU runs of --minutes 5 or more")
    p.add_argument("--class-names", type=lambda t: tuple(n.strip() for n in t.split(",")),
                   help="names of classes 0..K-1 for logs and reports, e.g. background,liver,tumour")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--init-from", dest="init_from", metavar="RUN_OR_PACKAGE", help="fine-tune: start from the "
                   "weights of this run folder or model package (same network and channels; other classes get a "
                   "fresh output layer); its network, patch and voxel size are kept unless set here")
    plan = p.add_argument_group("plan and cross-validation")
    plan.add_argument("--plan", type=Path, help="train with this plan JSON (from `medseg plan`, perhaps edited) "
                      "instead of planning DATA now")
    plan.add_argument("--no-plan", action="store_true", help="skip the fingerprint and plan; use fixed rules")
    plan.add_argument("--set", dest="plan_set", action="append", default=[], metavar="KEY=VALUE",
                      help="override one plan setting (JSON value), e.g. --set patch_size=[32,64,64]; repeatable")
    plan.add_argument("--memory-gb", type=float, help="memory the plan may use (default: half the RAM, or the GPU's)")
    plan.add_argument("--fold", type=int, help="train fold K of a 5-fold cross-validation into OUT/fold_K "
                      "(split in OUT/splits.json, created on first use, editable)")
    plan.add_argument("--folds", help="train several folds in turn: all, or e.g. 0,1,2")
    _add_device(p)

    p = sub.add_parser("plan", help="fingerprint a dataset and print the plan training would use",
                       description="Reads every case once (shape, spacing, intensities per modality in the "
                       "foreground, class sizes, connected components) and derives the settings training uses: "
                       "dimensions, target spacing, patch, batch, pooling per axis, widths, normalisation, loss "
                       "and schedule, each with its reason, to fit the given budget. Writes the plan as JSON; "
                       "edit it and pass it to `medseg train --plan`.")
    p.add_argument("data", type=Path, help="dataset folder")
    p.add_argument("--out", type=Path, help="plan file to write (default: ./<dataset>.plan.json)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device to plan for (default cpu)")
    p.add_argument("--memory-gb", type=float, help="memory budget (default: half the RAM, or the GPU's)")
    p.add_argument("--minutes", type=float, help="training time budget (default on a CPU: 20)")
    p.add_argument("--model", default="unet", help="network to size the plan for (default unet; `medseg models`)")
    p.add_argument("--force", action="store_true", help="replace an existing plan file")
    _add_label_suffix(p)

    p = sub.add_parser("predict", help="segment new images with a trained run",
                       description="Writes one mask per case (class indices 0..K-1, the input's size and "
                       "geometry) in the input's format (PNG for pictures; NIfTI/NRRD/MHA as the input; "
                       ".nii.gz for DICOM) and OUT/overlays/<case>.png.")
    p.add_argument("run", type=Path, help="run folder made by `medseg train`, or a model package (.medseg.zip "
                   "from `medseg export --package`)")
    p.add_argument("input", type=Path, help="an image or volume file, a DICOM series folder, or a folder of "
                   "them (nnU-Net CASE_0000/_0001 channel files are grouped by case)")
    p.add_argument("--out", type=Path, required=True, help="folder for the masks")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="which weights (default best)")
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap for large images (default 0.5)")
    p.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time augmentation: average over flips (default: on for 2D images, off for volumes, "
                   "where it costs 8 network passes per window)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the sliding-window network: ~18 s once, then windows between 10 %% slower and 4 %% "
                   "faster on a CPU (docs/decisions.md); default: only once about a thousand seconds of windows lie "
                   "ahead (large folders); the masks are the same either way")
    p.add_argument("--no-overlays", action="store_true", help="skip the overlay pictures")
    p.add_argument("--overwrite", action="store_true", help="replace masks medseg wrote earlier in --out; a folder "
                   "holding files medseg did not write (e.g. reference labels) is refused in any case")
    p.add_argument("--keep-going", action="store_true", help="skip inputs that cannot be read or do not fit the "
                   "model, predict the others and list the skipped ones at the end (exit code 2); without it, "
                   "every input is checked first and a bad one stops the command before any mask is written")
    p.add_argument("--format", dest="output_format", help="mask file type, e.g. .nii.gz, .nrrd, .mha, .png "
                   "(default: the input's); for DICOM series also dicom-seg (OUT/<case>_seg.dcm, a DICOM SEG) "
                   "or rtstruct (OUT/<case>_rtstruct.dcm, an RT Structure Set); docs/clinical.md")
    p.add_argument("--folds", type=_int_tuple, help="cross-validation folder: ensemble only these folds, e.g. 0,1 "
                   "(default: every trained fold)")
    p.add_argument("--no-postprocess", action="store_true", help="skip the postprocessing chosen on validation data")
    p.add_argument("--skip-empty", action=argparse.BooleanOptionalAction, default=False,
                   help="sliding windows that hold nothing but background (air, the zeros around a brain) are "
                   "background without running the network (default: off; --no-skip-empty runs them all)")
    p.add_argument("--uncertainty", action="store_true", help="also write per-voxel uncertainty maps "
                   "(OUT/uncertainty/: entropy in nats, the mask's grid and format; 2D: float TIFF + PNG heat map) and "
                   "per-case scores and flags (OUT/uncertainty.csv, .json); docs/prediction.md")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch", help="what runs the network: torch "
                   "(default) or onnx (ONNX Runtime on the CPU; exports RUN/model.onnx first if missing)")
    _add_device(p)

    p = sub.add_parser("suggest", help="rank unlabelled cases (3D: and their slices) to label next (docs/labelling.md)")
    p.add_argument("run", type=Path, help="run folder made by `medseg train`, or a model package")
    p.add_argument("input", type=Path, help="unlabelled cases: a folder of images / volumes / DICOM series, or one file")
    p.add_argument("--n", type=lambda t: None if t == "all" else int(t), default=10, help="cases listed (default 10; all)")
    p.add_argument("--out", type=Path, default=Path("suggestions.csv"), help="CSV, never inside INPUT (default ./suggestions.csv)")
    p.add_argument("--slices", type=int, default=3, help="volumes: slices listed per case (default 3)")
    for flag in ("--overwrite", "--keep-going"):
        p.add_argument(flag, action="store_true", help="as for predict")
    _add_device(p)

    p = sub.add_parser("export", help="export a trained run: its network as ONNX, or a portable model package",
                       description="--onnx writes the best checkpoint's network as ONNX (dynamic batch and spatial "
                       "axes), checked against PyTorch on a random patch; `medseg predict --backend onnx` uses it. "
                       "--package FILE writes one zip with the weights, plan, classes, preprocessing, validation "
                       "metrics, a model card and a SHA-256 manifest; `medseg predict FILE INPUT` verifies and uses "
                       "it (docs/clinical.md). Never replaces an existing file.")
    p.add_argument("run", type=Path, help="run folder made by `medseg train` (or a cross-validation folder)")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--onnx", action="store_true", help="export the network to ONNX")
    kind.add_argument("--package", type=Path, metavar="FILE", help="write a model package, e.g. model.medseg.zip")
    p.add_argument("--card", type=Path, metavar="FILE", help="--package: text file with the intended use and "
                   "limits, copied into the model card")
    p.add_argument("--out", type=Path, help="file to write (default RUN/model.onnx, RUN/model_last.onnx for last)")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="which weights (default best)")

    p = sub.add_parser("evaluate", help="compare predicted masks with reference masks",
                       description="Per case and class: Dice, Jaccard, accuracy, sensitivity, specificity, "
                       "precision, volumes and relative volume difference, HD95 and ASSD in mm (voxel spacing "
                       "from the reference headers), normalised surface Dice and lesion-wise detection F1. "
                       "Prints mean ± std per class, writes per-case rows (CSV) and a summary (JSON). A class "
                       "in only one of the masks scores Dice 0 and the image diagonal as distance (never NaN).")
    p.add_argument("pred", type=Path, help="folder of predicted masks")
    p.add_argument("labels", type=Path, help="folder of reference masks (or a dataset folder with labels/)")
    p.add_argument("--cases", type=lambda t: [c.strip() for c in t.split(",") if c.strip()],
                   help="score only these cases (file name stems, e.g. case_001,case_007)")
    p.add_argument("--only-predicted", action="store_true", help="score only the references that have a "
                   "prediction (a few predicted cases against a whole label folder)")
    p.add_argument("--run", type=Path, help="take the class names from this run folder (default: a dataset.json "
                   "beside LABELS, else class1, class2, ...)")
    p.add_argument("--class-names", type=lambda t: [n.strip() for n in t.split(",")],
                   help="names of classes 0..K-1, e.g. background,liver,tumour")
    p.add_argument("--json", type=Path, help="summary JSON (default PRED/evaluation.json)")
    p.add_argument("--csv", type=Path, help="per-case CSV (default PRED/evaluation.csv)")
    p.add_argument("--num-classes", type=int, help="number of classes (default: from the masks)")
    p.add_argument("--tolerance", type=float, default=1.0, help="normalised surface Dice tolerance in mm (default 1)")
    p.add_argument("--spacing", type=lambda t: tuple(float(v) for v in t.replace("x", ",").split(",")),
                   help="voxel size in mm (array axis order) for every case, instead of the files' headers")
    p.add_argument("--no-distances", action="store_true", help="skip HD95, ASSD and surface Dice (faster)")
    p.add_argument("--ignore-label", dest="ignore_label", type=float, metavar="VALUE",
                   help="reference value meaning 'not annotated' (sparse labels): such voxels count in no metric")
    p.add_argument("--no-lesions", action="store_true", help="skip lesion-wise detection")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation.csv/.json medseg wrote")
    p.add_argument("--accept-identical", action="store_true", help="score predictions that are byte for byte "
                   "their reference masks (refused by default: copies of the references score a perfect 1.000)")
    p.add_argument("--accept-spacing", action="store_true", help="score 3D predictions whose voxel spacing differs "
                   "from the reference's (on the reference's spacing, with a warning) instead of refusing them")

    p = sub.add_parser("report", help="write the HTML report of a training run",
                       description="One self-contained HTML file (opens offline): learning curves, validation "
                       "metrics with per-case box plots, best/median/worst overlays, cases worst first, data, "
                       "model (parameters, FLOPs per patch), plan and time. Predicts and evaluates the "
                       "validation cases into RUN/validation first when the run has not done so.")
    p.add_argument("run", type=Path, help="run folder made by `medseg train`")
    p.add_argument("--out", type=Path, help="HTML file to write (default RUN/report.html)")
    _add_device(p)

    p = sub.add_parser("convert", help="convert a published dataset layout into one medseg trains on",
                       description="brats: BraTS 2013 case folders (Flair*, T1c*, OTMultiClass) -> nnU-Net v2 "
                       "layout with dataset.json (channels FLAIR, T1c). Links files unless --copy.")
    p.add_argument("kind", choices=["brats"], help="source layout")
    p.add_argument("source", type=Path, help="source folder (e.g. ../shared/data/brats2013-6)")
    p.add_argument("--out", type=Path, required=True, help="new dataset folder")
    p.add_argument("--copy", action="store_true", help="copy files instead of symlinking them")

    p = sub.add_parser("demo", help="synthetic end-to-end demo: data, training, prediction, evaluation, report",
                       description="Makes phantom images, trains a fixed number of steps (the same lesson on any "
                       "machine; it says first how long this one needs), predicts, evaluates and writes one report, "
                       "OUT/report.html. Run again, it reuses a finished demo in OUT. Nothing is downloaded.")
    p.add_argument("--out", type=Path, default=Path("demo_run"), help="output folder (default demo_run): new, or "
                   "one an earlier demo wrote (reused when finished with the same settings, else replaced)")
    p.add_argument("--epochs", type=int, default=10, help="epochs of 40 training steps (default 10)")
    p.add_argument("--fresh", action="store_true", help="make the demo again even when OUT holds a finished one")
    _add_device(p)

    p = sub.add_parser("models", help="list the models with their parameters and FLOPs per patch",
                       description="Every model `--model` accepts, the dimensions it supports, its parameter "
                       "count and the GFLOPs of one forward pass of one patch, as `medseg train` builds it.")
    p.add_argument("--patch", type=int, nargs="+", metavar="N", help="patch sides, e.g. 96 96 96 "
                   "(default 64 64 64, or 256 256 with --dims 2)")
    p.add_argument("--dims", type=int, choices=[2, 3], help="2D or 3D models (default: from --patch, else 3)")
    p.add_argument("--in-channels", type=int, default=1, help="input channels (default 1)")
    p.add_argument("--classes", type=int, default=2, help="classes including background (default 2)")
    add_serve_parser(sub, _add_device)
    for command in sub.choices.values():  # --debug after the command word too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


TRAIN_OPTIONS = ("epochs", "minutes", "val_fraction", "seed", "model", "features", "norm", "loss", "batch_size",
                 "patch_size", "iterations_per_epoch", "lr", "precision", "device", "class_names", "ignore_label",
                 "label_suffix", "init_from")


def _key_values(items: list[str], flag: str) -> list[tuple[str, object]]:
    """KEY=VALUE strings -> (key, JSON value); a bare word stays a string (e.g. loss=dice)."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE, e.g. patch_size=[64,64,64]")
        try:
            out.append((key.strip(), json.loads(value)))
        except json.JSONDecodeError:
            out.append((key.strip(), value))
    return out


def _train_options(args: argparse.Namespace) -> dict:
    """CLI flags -> `medseg.train` keywords; flags left unset keep the library defaults."""
    options = {key: getattr(args, key) for key in TRAIN_OPTIONS if getattr(args, key) is not None}
    if args.image_size is not None:
        options["image_size"] = None if args.image_size == "native" else (
            "auto" if args.image_size == "auto" else int(args.image_size))
    for flag, key in (("no_augment", "augment"), ("no_crop", "crop_nonzero"), ("no_cache", "cache")):
        if getattr(args, flag):
            options[key] = False
    if args.target_spacing is not None:
        options["target_spacing"] = args.target_spacing
    if args.deep_supervision:
        options["deep_supervision"] = True
    if args.compile is not None:
        options["compile"] = args.compile
    if args.loss_option:
        options["loss_options"] = dict(_key_values(args.loss_option, "--loss-option"))
    options.update(_key_values(args.plan_set, "--set"))
    if args.no_plan:
        options["plan"] = False
        if "epochs" not in options and "minutes" not in options and not args.resume:
            options["minutes"] = 20.0
    elif args.plan is not None:
        options["plan"] = args.plan
    if args.memory_gb is not None:
        options["memory_gb"] = args.memory_gb
    if args.fold is not None and args.folds is not None:
        raise ValueError("give --fold K or --folds, not both")
    if args.fold is not None:
        options["fold"] = args.fold
    if args.folds is not None:
        options["folds"] = "all" if args.folds == "all" else list(_int_tuple(args.folds))
    return options


# What a user can cause: one line naming the file, exit code 2 (a traceback only with --debug).
USER_ERRORS = (MedsegInputError, OSError, ValueError, RuntimeError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from . import api  # heavy imports (torch) only after argument parsing, so --help is instant
    try:
        if args.command == "train":
            run = api.train(args.data, args.out, resume=args.resume, **_train_options(args))
            if api.distributed.is_main():  # under torchrun, one line from rank 0
                print(f"run written to {run} (checkpoints/, log.csv, learning_curves.png, run.json)")
        elif args.command == "plan":
            plan = api.plan_dataset(args.data, api.Budget(args.device, args.memory_gb, args.minutes), model=args.model,
                                    label_suffix=args.label_suffix)
            print(api.format_plan(plan))
            path = api.write_plan(plan, args.out or Path(f"{args.data.resolve().name}.plan.json"), overwrite=args.force)
            print(f"plan written to {path} (train with: medseg train {args.data} --out RUN --plan {path})")
        elif args.command == "predict":
            written = api.predict(args.run, args.input, args.out, device=args.device, checkpoint=args.checkpoint,
                                  overlap=args.overlap, mirror="auto" if args.mirror is None else args.mirror,
                                  overlays=not args.no_overlays,
                                  overwrite=args.overwrite, output_format=args.output_format,
                                  folds=list(args.folds) if args.folds else None,
                                  postprocess=not args.no_postprocess, backend=args.backend,
                                  skip_empty=args.skip_empty,
                                  compile="auto" if args.compile is None else args.compile,
                                  keep_going=args.keep_going, uncertainty=args.uncertainty)
            if api.distributed.is_main():  # under torchrun, one line from rank 0
                print(f"{len(written)} mask(s) written to {args.out}")
        elif args.command == "suggest":
            out, ranked = api.suggest(args.run, args.input, args.out, n=args.n, device=args.device, overwrite=args.overwrite,
                                      keep_going=args.keep_going, top_slices=args.slices)
            print(f"{len(ranked)} case(s) ranked, the best {min(args.n or len(ranked), len(ranked))} in {out}")
        elif args.command == "export":
            if args.package is not None:
                path = api.export_package(args.run, args.package, card=args.card, checkpoint=args.checkpoint)
                print(f"model package written to {path} (predict with: medseg predict {path} INPUT --out DIR)")
            else:
                print(f"ONNX model written to {api.export_onnx(args.run, args.out, checkpoint=args.checkpoint)}")
        elif args.command == "evaluate":
            from .runs import read_run_info
            names = args.class_names or (read_run_info(args.run).get("class_names") if args.run else None)
            result = api.evaluate(args.pred, args.labels, num_classes=args.num_classes, class_names=names,
                                  cases=args.cases, only_predicted=args.only_predicted,
                                  csv_path=args.csv or args.pred / "evaluation.csv",
                                  json_path=args.json or args.pred / "evaluation.json",
                                  tolerance=args.tolerance, spacing=args.spacing,
                                  distances=not args.no_distances, lesions=not args.no_lesions,
                                  ignore_label=args.ignore_label, overwrite=args.overwrite,
                                  check_spacing=not args.accept_spacing, accept_identical=args.accept_identical)
            print(result.table())
            print(f"per-case rows: {args.csv or args.pred / 'evaluation.csv'}; summary: {args.json or args.pred / 'evaluation.json'}")
        elif args.command == "report":
            print(f"report: {api.report(args.run, args.out, device=args.device)}")
        elif args.command == "convert":
            out = api.convert_brats(args.source, args.out, copy=args.copy)
            print(f"dataset written to {out} (train with: medseg train {out} --out RUN)")
        elif args.command == "demo":
            api.demo(args.out, epochs=args.epochs, device=args.device, fresh=args.fresh)  # it says where its report is
        elif args.command == "serve":
            run_serve(args)
        elif args.command == "models":
            print(api.models_table(args.patch, args.dims, args.in_channels, args.classes))
    except KeyboardInterrupt:
        print("interrupted; a training run can continue with --resume", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:  # bad input, a file that cannot be written, a refused option
        if args.debug or os.environ.get("MEDSEG_DEBUG") == "1":
            raise
        print(f"medseg {args.command}: error: {error_line(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
