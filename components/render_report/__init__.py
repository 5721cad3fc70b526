from convbench.components.render_report.component import render_report

__all__ = ["render_report"]
