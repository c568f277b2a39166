"""The final report: every trained model of the pipeline in one comparison table, plot and MLflow run."""

from cascadelab.report.table import ModelRow, collect_rows

__all__ = ["ModelRow", "collect_rows"]
