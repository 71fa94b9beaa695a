"""The HTML report: `metrics.collect` computes the numbers, `plots` draws them, `html.write_report`
writes report.html and metrics.json, `compare.write_compare` puts two runs side by side."""
