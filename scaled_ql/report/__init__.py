"""Reports on evaluated runs: the Scaled QL paper's tables and plots, and comparisons.

    python -m scaled_ql.report --runs=RUN_DIR[,RUN_DIR...] --output=DIR   (`__main__`)
    python -m scaled_ql.report.compare --runs=RUN_DIR[,...] --data_dir=DIR

- `build`: reads the runs (through `scaled_ql.runs`) and computes every number of the report;
- `tables`: lays the numbers out as Markdown, CSV and LaTeX tables;
- `plots`: draws the PNG plots;
- `scores`: normalised scores and their rliable aggregates with bootstrap CIs, power-law fits;
- `compare`: per game, each run's latest evaluation beside the data it learned from;
- `significance`: `compare`'s verdicts: t-tests over runs (seeds), Holm-corrected by family.

Nothing is imported here, so that `scaled_ql.report.scores` comes without matplotlib.
"""
