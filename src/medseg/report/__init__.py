"""Reporting: overlay pictures, learning curves and a self-contained HTML report."""
from medseg.report.curves import plot_learning_curves, read_log
from medseg.report.html import write_report
from medseg.report.overlay import PALETTE, REF_COLOUR, class_colour, overlay, save_overlay

__all__ = [
    "PALETTE", "REF_COLOUR", "class_colour", "overlay", "save_overlay",
    "plot_learning_curves", "read_log", "write_report",
]
